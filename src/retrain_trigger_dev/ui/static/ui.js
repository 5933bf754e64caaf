// retrain-trigger status page: small progressive enhancements; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A filter's select applies itself when changed.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) { select.form.requestSubmit(); }
    });
  });
  // Times are rendered in UTC; hovering shows the reader's local time.
  document.querySelectorAll("td.time").forEach(function (cell) {
    var text = cell.textContent.trim();
    var match = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})Z$/.exec(text);
    if (!match) { return; }
    var moment = new Date(match[1] + "T" + match[2] + "Z");
    if (!isNaN(moment.getTime())) { cell.title = moment.toLocaleString(); }
  });
  document.body.dataset.enhanced = "true";
});
