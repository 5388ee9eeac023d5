/* imgsynth reading package: viewer and answer form. No network, no external code.
 * Every text from the study is shown with textContent (never as markup).
 * Pixels come as 16-bit values in cases/<id>.js; physical value = stored * slope + intercept. */
(function () {
  'use strict';

  var S = window.IMGSYNTH_STUDY;
  var $ = function (id) { return document.getElementById(id); };

  function fatal(message) {
    var el = $('fatal');
    el.textContent = message;
    el.hidden = false;
  }

  if (!S || S.format !== 'imgsynth-review-package' || !S.cases || !S.cases.length) {
    fatal('This reading package is incomplete: study.js is missing or damaged. Ask for a new copy.');
    return;
  }

  var KEY = 'imgsynth-review/' + S.package;
  var N = S.cases.length;
  var DIMS = S.spatial_dims;
  var CACHE_SIZE = 6;
  var FIELDS = ['reader', 'case', 'answer', 'confidence', 'quality', 'comment', 'seconds'];

  /* ---------------------------------------------------------------- storage */
  var store = { answers: {}, seconds: {}, current: 0 };
  var storageOk = true;

  function loadStore() {
    try {
      var raw = window.localStorage.getItem(KEY);
      if (!raw) { return; }
      var data = JSON.parse(raw);
      if (data && typeof data === 'object') {
        store.answers = (data.answers && typeof data.answers === 'object') ? data.answers : {};
        store.seconds = (data.seconds && typeof data.seconds === 'object') ? data.seconds : {};
        var cur = parseInt(data.current, 10);
        store.current = (cur >= 0 && cur < N) ? cur : 0;
      }
    } catch (e) {
      storageOk = false;
    }
  }

  function saveStore() {
    try {
      window.localStorage.setItem(KEY, JSON.stringify(store));
    } catch (e) {
      storageOk = false;
    }
    if (!storageOk) {
      $('export-status').textContent = 'This browser does not keep answers for pages opened from disk: ' +
        'export answers.csv before closing it.';
    }
  }

  function isComplete(a) {
    return !!(a && (a.answer === 'real' || a.answer === 'synthetic') && a.confidence >= 1 && a.quality >= 1);
  }

  /* ---------------------------------------------------------------- case data */
  var littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  var cache = {};
  var cacheOrder = [];
  var waiting = {};

  function decode(b64, dtype, count) {
    var bin = window.atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    var signed = dtype === 'int16';
    if (littleEndian) { return signed ? new Int16Array(bytes.buffer) : new Uint16Array(bytes.buffer); }
    var out = signed ? new Int16Array(count) : new Uint16Array(count);
    var view = new DataView(bytes.buffer);
    for (var k = 0; k < count; k++) { out[k] = signed ? view.getInt16(2 * k, true) : view.getUint16(2 * k, true); }
    return out;
  }

  window.imgsynthCase = function (c) {
    var count = 1;
    for (var i = 0; i < c.shape.length; i++) { count *= c.shape[i]; }
    var entry = { id: c.id, shape: c.shape, data: decode(c.data, c.dtype, count), auto: null };
    cache[c.id] = entry;
    cacheOrder.push(c.id);
    while (cacheOrder.length > CACHE_SIZE) { delete cache[cacheOrder.shift()]; }
    var cbs = waiting[c.id] || [];
    delete waiting[c.id];
    cbs.forEach(function (cb) { cb(null, entry); });
  };

  function loadCase(id, cb) {
    if (cache[id]) { cb(null, cache[id]); return; }
    if (waiting[id]) { waiting[id].push(cb); return; }
    waiting[id] = [cb];
    var script = document.createElement('script');
    script.src = 'cases/' + encodeURIComponent(id) + '.js';
    script.onerror = function () {
      var cbs = waiting[id] || [];
      delete waiting[id];
      cbs.forEach(function (f) { f(new Error('cases/' + id + '.js could not be loaded')); });
    };
    script.onload = function () { script.parentNode.removeChild(script); };
    document.head.appendChild(script);
  }

  /* ---------------------------------------------------------------- viewer */
  var canvas = $('canvas');
  var ctx = canvas.getContext('2d');
  var off = document.createElement('canvas');
  var offCtx = off.getContext('2d');
  var span = Math.max(S.range[1] - S.range[0], 1e-12);  /* physical range of the encoded values */
  var view = {
    entry: null, slice: 0, center: 0, width: 1, preset: 0, zoom: 1, panX: 0, panY: 0,
    rows: 0, cols: 0, depth: 1, imageData: null
  };

  function toPhysical(s) { return s * S.slope + S.intercept; }

  function autoWindow(entry) {
    if (entry.auto) { return entry.auto; }
    var data = entry.data;
    var step = Math.max(1, Math.floor(data.length / 200000));
    var sample = [];
    for (var i = 0; i < data.length; i += step) { sample.push(data[i]); }
    sample.sort(function (a, b) { return a - b; });
    var lo = toPhysical(sample[Math.floor(0.01 * (sample.length - 1))]);
    var hi = toPhysical(sample[Math.floor(0.99 * (sample.length - 1))]);
    if (!(hi > lo)) { hi = lo + span * 1e-3; }
    entry.auto = { center: (lo + hi) / 2, width: hi - lo };
    return entry.auto;
  }

  function applyPreset(index) {
    view.preset = index;
    var p = S.presets[index];
    var w = (p.center === null || p.width === null) && view.entry ? autoWindow(view.entry) : p;
    view.center = w.center;
    view.width = w.width;
    var buttons = $('presets').querySelectorAll('button');
    for (var i = 0; i < buttons.length; i++) { buttons[i].classList.toggle('active', i === index); }
    render();
  }

  function buildPresets() {
    var box = $('presets');
    S.presets.forEach(function (p, i) {
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = p.name;
      if (p.center !== null && p.width !== null) {
        b.title = 'W ' + fmt(p.width) + ' / L ' + fmt(p.center) + (S.unit ? ' ' + S.unit : '');
      } else {
        b.title = '1st to 99th percentile of this image';
      }
      b.addEventListener('click', function () { applyPreset(i); });
      box.appendChild(b);
    });
  }

  function fmt(x) {
    var a = Math.abs(x);
    if (a !== 0 && (a < 0.01 || a >= 1e5)) { return x.toExponential(2); }
    return (Math.round(x * 100) / 100).toString();
  }

  function sizeCanvas() {
    var stage = $('stage');
    var ratio = window.devicePixelRatio || 1;
    var w = Math.max(1, stage.clientWidth);
    var h = Math.max(1, stage.clientHeight);
    canvas.style.width = w + 'px';
    canvas.style.height = h + 'px';
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }

  function pixelSize() {
    var sp = S.spacing;
    var rowSp = sp[sp.length - 2] || 1;
    var colSp = sp[sp.length - 1] || 1;
    return { row: rowSp, col: colSp };
  }

  function layout() {
    var px = pixelSize();
    var ratio = window.devicePixelRatio || 1;
    var w = view.cols * px.col;
    var h = view.rows * px.row;
    var fit = Math.min(canvas.width / w, canvas.height / h);
    var k = fit * view.zoom;
    var dw = w * k;
    var dh = h * k;
    return {
      x: (canvas.width - dw) / 2 + view.panX * ratio,
      y: (canvas.height - dh) / 2 + view.panY * ratio,
      w: dw, h: dh, ratio: ratio
    };
  }

  function render() {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!view.entry) { return; }
    var rows = view.rows;
    var cols = view.cols;
    var n = rows * cols;
    var start = view.slice * n;
    var data = view.entry.data;
    var lo = view.center - view.width / 2;
    var scale = 255 / Math.max(view.width, 1e-12);
    var img = view.imageData;
    var px = img.data;
    for (var i = 0; i < n; i++) {
      var g = (data[start + i] * S.slope + S.intercept - lo) * scale;
      g = g < 0 ? 0 : (g > 255 ? 255 : g);
      var j = 4 * i;
      px[j] = px[j + 1] = px[j + 2] = g;
      px[j + 3] = 255;
    }
    offCtx.putImageData(img, 0, 0);
    var box = layout();
    ctx.imageSmoothingEnabled = $('smooth').checked;
    ctx.drawImage(off, box.x, box.y, box.w, box.h);
    $('wl-text').textContent = 'W ' + fmt(view.width) + ' / L ' + fmt(view.center) + (S.unit ? ' ' + S.unit : '');
    if (DIMS === 3) {
      $('slice').value = String(view.slice);
      $('slice-text').textContent = 'slice ' + (view.slice + 1) + ' / ' + view.depth;
    }
  }

  function setSlice(k) {
    if (!view.entry || DIMS !== 3) { return; }
    view.slice = Math.max(0, Math.min(view.depth - 1, k));
    render();
  }

  function setZoom(z) {
    view.zoom = Math.max(0.25, Math.min(32, z));
    render();
  }

  function showImage(entry) {
    view.entry = entry;
    var shape = entry.shape;
    view.depth = DIMS === 3 ? shape[0] : 1;
    view.rows = shape[shape.length - 2];
    view.cols = shape[shape.length - 1];
    view.slice = Math.floor(view.depth / 2);
    off.width = view.cols;
    off.height = view.rows;
    view.imageData = offCtx.createImageData(view.cols, view.rows);
    view.zoom = 1;
    view.panX = view.panY = 0;
    if (DIMS === 3) {
      $('slice-box').hidden = false;
      $('slice').max = String(view.depth - 1);
    }
    applyPreset(view.preset);
  }

  function imagePoint(evt) {
    var rect = canvas.getBoundingClientRect();
    var box = layout();
    var x = ((evt.clientX - rect.left) * box.ratio - box.x) / box.w * view.cols;
    var y = ((evt.clientY - rect.top) * box.ratio - box.y) / box.h * view.rows;
    return { x: Math.floor(x), y: Math.floor(y) };
  }

  function showValue(evt) {
    if (!view.entry) { return; }
    var p = imagePoint(evt);
    if (p.x < 0 || p.y < 0 || p.x >= view.cols || p.y >= view.rows) { $('value-text').textContent = ''; return; }
    var v = toPhysical(view.entry.data[view.slice * view.rows * view.cols + p.y * view.cols + p.x]);
    $('value-text').textContent = '(' + p.x + ', ' + p.y + (DIMS === 3 ? ', ' + view.slice : '') + ') = ' +
      fmt(v) + (S.unit ? ' ' + S.unit : '');
  }

  var drag = null;
  canvas.addEventListener('pointerdown', function (evt) {
    drag = { x: evt.clientX, y: evt.clientY, pan: evt.shiftKey || evt.button === 1, center: view.center,
      width: view.width, panX: view.panX, panY: view.panY };
    canvas.setPointerCapture(evt.pointerId);
    evt.preventDefault();
  });
  canvas.addEventListener('pointermove', function (evt) {
    showValue(evt);
    if (!drag) { return; }
    var dx = evt.clientX - drag.x;
    var dy = evt.clientY - drag.y;
    if (drag.pan) {
      view.panX = drag.panX + dx;
      view.panY = drag.panY + dy;
    } else {
      var sens = span / 400;  /* 400 px drag = the full range */
      view.width = Math.max(sens * 0.5, drag.width + dx * sens);
      view.center = drag.center + dy * sens;
    }
    render();
  });
  function endDrag() { drag = null; }
  canvas.addEventListener('pointerup', endDrag);
  canvas.addEventListener('pointercancel', endDrag);
  canvas.addEventListener('dblclick', function () { view.zoom = 1; view.panX = view.panY = 0; render(); });
  canvas.addEventListener('contextmenu', function (evt) { evt.preventDefault(); });
  canvas.addEventListener('wheel', function (evt) {
    evt.preventDefault();
    var dir = evt.deltaY > 0 ? 1 : (evt.deltaY < 0 ? -1 : 0);
    if (DIMS === 3 && !evt.ctrlKey) { setSlice(view.slice + dir); } else { setZoom(view.zoom * (dir > 0 ? 1 / 1.15 : 1.15)); }
  }, { passive: false });
  $('slice').addEventListener('input', function () { setSlice(parseInt($('slice').value, 10)); });
  $('zoom-in').addEventListener('click', function () { setZoom(view.zoom * 1.25); });
  $('zoom-out').addEventListener('click', function () { setZoom(view.zoom / 1.25); });
  $('zoom-fit').addEventListener('click', function () { view.zoom = 1; view.panX = view.panY = 0; render(); });
  $('smooth').addEventListener('change', render);
  window.addEventListener('resize', function () { sizeCanvas(); render(); });

  /* ---------------------------------------------------------------- timing */
  var shownAt = null;

  function flushTime() {
    if (shownAt === null) { return; }
    var id = S.cases[store.current].id;
    var now = window.performance.now();
    store.seconds[id] = (store.seconds[id] || 0) + (now - shownAt) / 1000;
    shownAt = document.visibilityState === 'hidden' ? null : now;
  }

  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'hidden') { flushTime(); shownAt = null; saveStore(); } else { shownAt = window.performance.now(); }
  });
  window.addEventListener('pagehide', function () { flushTime(); saveStore(); });
  window.setInterval(function () { flushTime(); saveStore(); }, 5000);

  /* ---------------------------------------------------------------- form */
  var form = $('form');

  function radios(name) { return form.querySelectorAll('input[name="' + name + '"]'); }

  function setRadio(name, value) {
    var list = radios(name);
    for (var i = 0; i < list.length; i++) { list[i].checked = value !== undefined && list[i].value === String(value); }
  }

  function getRadio(name) {
    var list = radios(name);
    for (var i = 0; i < list.length; i++) { if (list[i].checked) { return list[i].value; } }
    return null;
  }

  function readForm() {
    var id = S.cases[store.current].id;
    var prev = store.answers[id] || {};
    var a = {
      answer: getRadio('answer') || undefined,
      confidence: parseInt(getRadio('confidence'), 10) || undefined,
      quality: parseInt(getRadio('quality'), 10) || undefined,
      comment: $('comment').value
    };
    if (a.answer === undefined && a.confidence === undefined && a.quality === undefined && !a.comment && !prev.answer) {
      return;
    }
    store.answers[id] = a;
    flushTime();
    saveStore();
    updateProgress();
    formStatus();
  }

  function formStatus() {
    var a = store.answers[S.cases[store.current].id];
    var el = $('form-status');
    if (isComplete(a)) { el.textContent = 'Saved.'; el.className = 'status ok'; } else if (a) {
      el.textContent = 'Incomplete: choose real or synthetic, confidence and quality.';
      el.className = 'status warn';
    } else { el.textContent = ''; el.className = 'status'; }
  }

  function fillForm() {
    var a = store.answers[S.cases[store.current].id] || {};
    setRadio('answer', a.answer);
    setRadio('confidence', a.confidence);
    setRadio('quality', a.quality);
    $('comment').value = a.comment || '';
    formStatus();
  }

  form.addEventListener('change', readForm);
  $('comment').addEventListener('input', readForm);
  form.addEventListener('submit', function (evt) {
    evt.preventDefault();
    readForm();
    if (!isComplete(store.answers[S.cases[store.current].id])) {
      $('form-status').textContent = 'Choose real or synthetic, confidence and quality first.';
      $('form-status').className = 'status warn';
      return;
    }
    var next = nextUnanswered(store.current);
    showCase(next === null ? Math.min(store.current + 1, N - 1) : next);
  });
  $('prev').addEventListener('click', function () { if (store.current > 0) { showCase(store.current - 1); } });

  function nextUnanswered(from) {
    for (var k = 1; k <= N; k++) {
      var i = (from + k) % N;
      if (!isComplete(store.answers[S.cases[i].id])) { return i; }
    }
    return null;
  }

  /* ---------------------------------------------------------------- cases */
  function answeredCount() {
    var k = 0;
    S.cases.forEach(function (c) { if (isComplete(store.answers[c.id])) { k++; } });
    return k;
  }

  function updateProgress() {
    var k = answeredCount();
    $('progress').max = N;
    $('progress').value = k;
    $('progress-text').textContent = k + ' of ' + N + ' answered';
    var items = $('case-list').children;
    for (var i = 0; i < items.length; i++) {
      var b = items[i].firstChild;
      b.classList.toggle('done', isComplete(store.answers[S.cases[i].id]));
      b.classList.toggle('current', i === store.current);
    }
  }

  function buildCaseList() {
    var list = $('case-list');
    S.cases.forEach(function (c, i) {
      var li = document.createElement('li');
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = String(i + 1);
      b.title = 'Case ' + (i + 1) + ' (' + c.id + ')';
      b.addEventListener('click', function () { showCase(i); });
      li.appendChild(b);
      list.appendChild(li);
    });
  }

  function showLabels(c) {
    var dl = $('labels');
    while (dl.firstChild) { dl.removeChild(dl.firstChild); }
    (c.labels || []).forEach(function (kv) {
      var dt = document.createElement('dt');
      dt.textContent = String(kv[0]);
      var dd = document.createElement('dd');
      dd.textContent = String(kv[1]);
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
  }

  var token = 0;
  function showCase(i) {
    flushTime();
    store.current = i;
    shownAt = window.performance.now();
    saveStore();
    var c = S.cases[i];
    $('case-title').textContent = 'Case ' + (i + 1) + ' of ' + N + ' \u00b7 ' + c.id;
    showLabels(c);
    fillForm();
    updateProgress();
    var mine = ++token;
    $('loading').hidden = false;
    loadCase(c.id, function (err, entry) {
      if (mine !== token) { return; }
      $('loading').hidden = true;
      if (err) { fatal(err.message + '; the package folder may be incomplete.'); return; }
      showImage(entry);
      if (i + 1 < N) { loadCase(S.cases[i + 1].id, function () {}); }
    });
  }

  /* ---------------------------------------------------------------- export */
  function csvCell(v) {
    var s = v === undefined || v === null ? '' : String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function answersCsv() {
    var lines = [FIELDS.join(',')];
    S.cases.forEach(function (c) {
      var a = store.answers[c.id];
      if (!isComplete(a)) { return; }
      var secs = Math.round((store.seconds[c.id] || 0) * 10) / 10;
      lines.push([S.reader, c.id, a.answer, a.confidence, a.quality, a.comment || '', secs.toFixed(1)].map(csvCell).join(','));
    });
    return { text: lines.join('\n') + '\n', count: lines.length - 1 };
  }

  $('export').addEventListener('click', function () {
    flushTime();
    saveStore();
    var out = answersCsv();
    var blob = new Blob([out.text], { type: 'text/csv;charset=utf-8' });
    var url = URL.createObjectURL(blob);
    var a = document.createElement('a');
    a.href = url;
    a.download = 'answers.csv';
    document.body.appendChild(a);
    a.click();
    document.body.removeChild(a);
    window.setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
    var missing = N - out.count;
    $('export-status').textContent = 'Exported ' + out.count + ' answer' + (out.count === 1 ? '' : 's') +
      (missing ? ' (' + missing + ' case' + (missing === 1 ? '' : 's') + ' still unanswered; Import\u2026 this ' +
        'file later to continue).' : '. Thank you!');
  });

  /* ---------------------------------------------------------------- import */
  function parseCsv(text) {
    var rows = [];
    var row = [];
    var cell = '';
    var quoted = false;
    text = text.replace(/^\ufeff/, '');
    for (var i = 0; i < text.length; i++) {
      var ch = text[i];
      if (quoted) {
        if (ch === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (ch === '"') { quoted = false; } else { cell += ch; }
      } else if (ch === '"') {
        quoted = true;
      } else if (ch === ',') {
        row.push(cell); cell = '';
      } else if (ch === '\n' || ch === '\r') {
        if (ch === '\r' && text[i + 1] === '\n') { i++; }
        row.push(cell); rows.push(row); row = []; cell = '';
      } else {
        cell += ch;
      }
    }
    if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
    return rows;
  }

  function importAnswers(text) {
    var rows = parseCsv(text);
    var head = rows.shift() || [];
    var col = {};
    FIELDS.forEach(function (f) { col[f] = head.indexOf(f); });
    if (FIELDS.some(function (f) { return col[f] < 0; })) {
      return 'This is not an answers.csv file (expected columns ' + FIELDS.join(', ') + ').';
    }
    var known = {};
    S.cases.forEach(function (c) { known[c.id] = true; });
    var restored = 0;
    var other = 0;
    rows.forEach(function (r) {
      if (r.length < FIELDS.length) { return; }
      var a = {
        answer: r[col.answer], confidence: parseInt(r[col.confidence], 10), quality: parseInt(r[col.quality], 10),
        comment: r[col.comment]
      };
      if (r[col.reader] !== S.reader || !known[r[col['case']]] || !isComplete(a) ||
          a.confidence > 5 || a.quality > 5) { other++; return; }
      store.answers[r[col['case']]] = a;
      var secs = parseFloat(r[col.seconds]);
      if (secs >= 0) { store.seconds[r[col['case']]] = Math.max(store.seconds[r[col['case']]] || 0, secs); }
      restored++;
    });
    saveStore();
    fillForm();
    updateProgress();
    return 'Restored ' + restored + ' answer' + (restored === 1 ? '' : 's') +
      (other ? ' (' + other + ' row' + (other === 1 ? '' : 's') + ' of another reader or study ignored).' : '.');
  }

  $('import-file').addEventListener('change', function () {
    var file = this.files && this.files[0];
    if (!file) { return; }
    var input = this;
    var reader = new FileReader();
    reader.onload = function () {
      $('export-status').textContent = importAnswers(String(reader.result));
      input.value = '';
    };
    reader.onerror = function () { $('export-status').textContent = 'The file could not be read.'; };
    reader.readAsText(file);
  });

  /* ---------------------------------------------------------------- keys */
  document.addEventListener('keydown', function (evt) {
    var tag = (evt.target && evt.target.tagName) || '';
    if (tag === 'TEXTAREA' || (tag === 'INPUT' && evt.target.type === 'text') || evt.ctrlKey || evt.metaKey || evt.altKey) { return; }
    var k = evt.key;
    if (k === 'ArrowUp' || k === 'PageUp') { setSlice(view.slice - 1); } else if (k === 'ArrowDown' || k === 'PageDown') { setSlice(view.slice + 1); } else if (k === '+' || k === '=') { setZoom(view.zoom * 1.25); } else if (k === '-') { setZoom(view.zoom / 1.25); } else if (k === 'w' || k === 'W') { applyPreset((view.preset + 1) % S.presets.length); } else if (k === 'r' || k === 'R') { setRadio('answer', 'real'); readForm(); } else if (k === 's' || k === 'S') { setRadio('answer', 'synthetic'); readForm(); } else if (k === 'n' || k === 'N') { form.requestSubmit ? form.requestSubmit() : $('next').click(); } else if (k === 'p' || k === 'P') { $('prev').click(); } else { return; }
    evt.preventDefault();
  });

  /* ---------------------------------------------------------------- start */
  document.title = S.title;
  $('title').textContent = S.title;
  $('reader').textContent = S.reader;
  $('instructions').textContent = S.instructions;
  loadStore();
  buildPresets();
  buildCaseList();
  sizeCanvas();
  if (!storageOk) { saveStore(); }
  showCase(store.current);
  window.imgsynthReady = true;
}());
