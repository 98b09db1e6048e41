/* aichaos HTML report: draws the charts of the embedded data with uPlot. Nothing is fetched. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("aichaos-data").textContent);
  var palette = ["#0969da", "#bf3989", "#1a7f37", "#bc4c00", "#8250df", "#1b7c83", "#9a6700", "#57606a",
                 "#cf222e", "#0550ae"];
  var root = document.getElementById("charts");
  var plots = [];

  // fault periods as bands, phase boundaries as lines, SLO limits as dashed lines, under the series
  function timeline(chart) {
    return {
      hooks: {
        drawAxes: [function (u) {
          var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height, left = u.bbox.left, width = u.bbox.width;
          ctx.save();
          ctx.beginPath(); ctx.rect(left, top, width, height); ctx.clip();
          data.faults.forEach(function (f) {
            var x0 = u.valToPos(f.start, "x", true), x1 = u.valToPos(f.end, "x", true);
            ctx.fillStyle = "rgba(207, 34, 46, 0.14)";
            ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
          });
          ctx.strokeStyle = "#57606a"; ctx.lineWidth = 1; ctx.fillStyle = "#57606a";
          ctx.font = Math.round(11 * devicePixelRatio) + "px system-ui, sans-serif";
          data.phases.forEach(function (p) {
            var x = Math.round(u.valToPos(p.start, "x", true)) + 0.5;
            ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
            ctx.fillText(p.name, x + 4, top + 12 * devicePixelRatio);
          });
          ctx.setLineDash([6, 4]); ctx.strokeStyle = "#bf8700";
          chart.limits.forEach(function (l) {
            var y = Math.round(u.valToPos(l.value, "y", true)) + 0.5;
            if (y < top || y > top + height) { return; }
            ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke();
          });
          ctx.restore();
        }]
      }
    };
  }

  function width() { return Math.max(320, root.clientWidth); }

  // axis labels that fit their gutter: 1.5k, 2.1G
  function compact(u, splits) {
    return splits.map(function (v) {
      if (v == null) { return ""; }
      var a = Math.abs(v), units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
      for (var i = 0; i < units.length; i++) {
        if (a >= units[i][0]) { return +(v / units[i][0]).toFixed(2) + units[i][1]; }
      }
      return +v.toFixed(a < 1 ? 3 : 2) + "";
    });
  }

  data.charts.forEach(function (chart) {
    var box = document.createElement("div");
    box.className = "chart";
    box.id = "chart-" + chart.id;
    var title = document.createElement("h3");
    title.textContent = chart.title;
    box.appendChild(title);
    if (chart.note) {
      var note = document.createElement("p");
      note.className = "note";
      note.textContent = chart.note;
      box.appendChild(note);
    }
    root.appendChild(box);
    var right = chart.series.some(function (s) { return s.axis === "right"; });
    var series = [{label: "s"}];
    chart.series.forEach(function (s, i) {
      series.push({label: s.label, stroke: palette[i % palette.length], width: 1.5, spanGaps: false,
                   dash: s.dash ? [6, 4] : undefined, scale: s.axis === "right" ? "right" : "y",
                   points: {show: false}});
    });
    var highest = chart.limits.reduce(function (m, l) { return Math.max(m, l.value); }, 0);
    var opts = {
      width: width(), height: 220, series: series, plugins: [timeline(chart)],
      scales: {x: {time: false}, y: {range: function (u, min, max) {
        return [0, Math.max(max || 0, highest * 1.1) * 1.05 || 1];
      }}},
      axes: [{label: "seconds from the start of the first phase"}, {label: chart.unit, values: compact}]
        .concat(right ? [{side: 1, scale: "right", grid: {show: false}, values: compact}] : []),
      legend: {live: true}, cursor: {drag: {x: true, y: false}}
    };
    var columns = [data.x].concat(chart.series.map(function (s) { return s.values; }));
    plots.push(new uPlot(opts, columns, box));
  });

  window.addEventListener("resize", function () {
    plots.forEach(function (p) { p.setSize({width: width(), height: 220}); });
  });
  window.aichaosRendered = performance.now();  // when the charts were drawn (the benchmark reads it)
})();
