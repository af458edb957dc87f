// Live updates: one shared query on the server, told to every page over Server-Sent Events.
// The list's rows and counts change in place, and so do an execution's status and state on
// its own page. Nothing here is needed to read a page.
(function () {
  var status = document.getElementById("live-status");
  if (!window.EventSource) return;
  // The server watches the executions this page shows (by id, however old), no others.
  var ids = [];
  document.querySelectorAll("#executions tr[data-id]").forEach(function (row) {
    ids.push(row.getAttribute("data-id"));
  });
  var here = document.body.getAttribute("data-execution");
  if (here) ids.push(here);
  var source = new EventSource("/live?ids=" + encodeURIComponent(ids.join(",")));
  // Closed before the page goes: a form posted while the stream is open was aborted by
  // Chromium (seen in the browser test).
  document.addEventListener("submit", function () { source.close(); });
  window.addEventListener("pagehide", function () { source.close(); });
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
    live.changed.forEach(function (e) {
      if (here && here === e.id) {
        // This execution moved on: its status and state change in place.
        var shown = document.querySelector("[data-status]");
        if (shown && shown.textContent !== e.status) {
          shown.textContent = e.status;
          shown.className = "status " + e.status;
          shown.classList.add("changed");
          var waiting = document.querySelector(".waiting-for");
          if (waiting) waiting.remove();
          // What the page shows below (its path, its forms) is as it was: say so.
          var note = document.getElementById("moved-on");
          if (!note) {
            note = document.createElement("p");
            note.id = "moved-on";
            note.className = "note";
            note.innerHTML = 'It moved on since this page was drawn: <a href="">reload</a> for its path and history.';
            shown.closest("dl").after(note);
          }
          var actions = document.querySelector("section.actions");
          if (actions) actions.remove();
        }
        var state = document.querySelector("dd[data-state]");
        if (state && state.textContent !== e.state) state.textContent = e.state;
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
