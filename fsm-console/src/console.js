// Live updates: one shared query on the server, told to every page over Server-Sent Events.
// The list's rows and counts change in place; a page about one execution reloads when that
// execution changes. Nothing here is needed to read a page.
(function () {
  var status = document.getElementById("live-status");
  if (!window.EventSource) return;
  var source = new EventSource("/live");
  source.addEventListener("open", function () { if (status) status.classList.add("on"); });
  source.addEventListener("error", function () { if (status) status.classList.remove("on"); });
  source.addEventListener("live", function (message) {
    var live = JSON.parse(message.data);
    Object.keys(live.counts).forEach(function (name) {
      var cell = document.querySelector('[data-count="' + name + '"]');
      if (cell) cell.textContent = live.counts[name];
    });
    var backlog = document.querySelector("[data-backlog]");
    if (backlog) backlog.textContent = live.backlog;
    var table = document.querySelector("#executions tbody");
    var here = document.body.getAttribute("data-execution");
    live.changed.forEach(function (e) {
      if (here && here === e.id) {
        var shown = document.querySelector("[data-status]");
        if (shown && shown.textContent !== e.status) window.location.reload();
      }
      if (!table) return;
      var row = table.querySelector('tr[data-id="' + e.id + '"]');
      if (!row) return;
      var fresh = document.createElement("tbody");
      fresh.innerHTML = e.row; // Rendered and escaped by the server.
      var replacement = fresh.firstElementChild;
      if (replacement && row.outerHTML !== replacement.outerHTML) {
        replacement.classList.add("changed");
        row.replaceWith(replacement);
      }
    });
  });
})();
