/* Code names in table cells (`RoIHeads.postprocess_detections`) break after "_", "." or "/"
   rather than between any two letters: a <wbr> after each of those characters (book.css lets
   table code wrap, and a browser prefers these break points). The generated tables get the same
   from minimask.viz.code_cell; this covers the tables written by hand in the chapters. */
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("article table code").forEach(function (code) {
    if (code.querySelector("wbr")) return; // already marked (viz.code_cell)
    var walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
    var nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    nodes.forEach(function (node) {
      var parts = node.nodeValue.split(/(?<=[_./])/);
      if (parts.length < 2) return;
      var frag = document.createDocumentFragment();
      parts.forEach(function (part, i) {
        frag.appendChild(document.createTextNode(part));
        if (i < parts.length - 1) frag.appendChild(document.createElement("wbr"));
      });
      node.parentNode.replaceChild(frag, node);
    });
  });
});
