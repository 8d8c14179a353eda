// Times are sent in UTC; this toggles them to the browser's zone and back (remembered).
(function () {
  var KEY = "fleetscore-zone";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function zoneName() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local"; } catch (e) { return "local"; }
  }
  function fmt(ms, local, short) {
    var d = new Date(ms);
    if (!local) {
      var s = d.toISOString().replace("T", " ");
      return short ? s.slice(5, 16) : s.slice(0, 19) + " UTC";
    }
    var t = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
    return short ? t.slice(5) : t + ":" + pad(d.getSeconds()) + " " + zoneName();
  }
  function apply(local) {
    document.querySelectorAll("time[data-ms]").forEach(function (t) {
      t.textContent = fmt(+t.getAttribute("data-ms"), local, false);
    });
    document.querySelectorAll("text.t[data-ms]").forEach(function (t) {
      t.textContent = fmt(+t.getAttribute("data-ms"), local, true);
    });
    document.querySelectorAll(".zone-name").forEach(function (z) {
      z.textContent = local ? zoneName() : "UTC";
    });
    var b = document.getElementById("zone");
    if (b) { b.textContent = local ? "Times: " + zoneName() + " (show UTC)" : "Times: UTC (show local)"; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var local = localStorage.getItem(KEY) === "local";
    apply(local);
    var b = document.getElementById("zone");
    if (b) {
      b.addEventListener("click", function () {
        local = !local;
        localStorage.setItem(KEY, local ? "local" : "utc");
        apply(local);
      });
    }
  });
})();
