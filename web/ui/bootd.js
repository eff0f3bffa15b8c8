// bootd's status page. The server renders every page whole; this keeps it
// live (GET /api/v1/events says something happened, the JSON API says
// what is now, and a fetch every 10 s covers a lost stream) and sorts and
// filters the node table. Node-supplied text is hostile: everything goes
// into the page as text nodes and attributes, never as markup.
(function () {
  'use strict';

  var STAGES = ['dhcp', 'loader', 'config', 'kernel', 'initrd', 'root', 'up', 'down', 'lost', 'unseen'];
  var ENDS = { up: true, down: true, lost: true }; // stages that end a boot
  var TERM = 12; // percent of a timeline row for each stage that ends a boot (as ui.go)
  var POLL = 10000;
  var SVG = 'http://www.w3.org/2000/svg';

  function $(id) { return document.getElementById(id); }

  // make builds an element: attributes by setAttribute, children as
  // nodes or text nodes.
  function make(ns, tag, attrs, kids) {
    var e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (var k in attrs || {}) {
      if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) e.setAttribute(k, String(attrs[k]));
    }
    (kids || []).forEach(function (c) {
      if (c === null || c === undefined || c === '') return;
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function el(tag, attrs, kids) { return make(null, tag, attrs, kids); }
  function svg(tag, attrs, kids) { return make(SVG, tag, attrs, kids); }

  // Times: the API's RFC 3339, the zero time (year 1) for none.
  function ms(t) {
    var v = t ? Date.parse(t) : NaN;
    return isNaN(v) || v < 86400000 ? null : v;
  }
  function iso(t) { return new Date(t).toISOString(); }
  function abs(t) { return iso(t).slice(0, 19).replace('T', ' ') + ' UTC'; }
  function clock(t) { return iso(t).slice(11, 19); }
  function secs(s) { return s.toFixed(1) + ' s'; }
  function ago(now, t) {
    var d = (now - t) / 1000;
    if (d < 1) return 'now';
    if (d < 60) return Math.floor(d) + ' s ago';
    if (d < 3600) return Math.floor(d / 60) + ' m ago';
    if (d < 48 * 3600) return Math.floor(d / 3600) + ' h ago';
    return Math.floor(d / 86400) + ' d ago';
  }
  function agoEl(now, t) {
    var v = ms(t);
    return v === null ? null : el('time', { datetime: iso(v), title: abs(v) }, [ago(now, v)]);
  }
  function image(name, gen) { return name ? name + '/' + (gen || 0) : ''; }
  function badge(stage) { return el('span', { 'class': 'badge s-' + stage }, [stage]); }

  // The indicator in the top bar.
  function status(cls, text, title) {
    var e = $('live');
    if (!e) return;
    e.className = 'live' + (cls ? ' ' + cls : '');
    e.textContent = text;
    e.title = title;
  }

  // follow calls load now, on every event that wants (coalesced), and
  // every 10 s; load returns a promise.
  function follow(wants, load) {
    var busy = false, again = false, timer = null, streaming = false;
    function run() {
      if (busy) { again = true; return; }
      busy = true;
      load().then(function () {
        var at = 'Updated ' + clock(Date.now()) + ' UTC';
        if (streaming) status('on', 'live', at + '; live from the event stream, and every 10 s');
        else status('poll', 'polling', at + '; the event stream is not connected: updating every 10 s');
      }, function (err) {
        status('', 'offline', 'Update failed at ' + clock(Date.now()) + ' UTC: ' + err.message);
      }).then(function () {
        busy = false;
        if (again) { again = false; run(); }
      });
    }
    // Events come in bursts while a cluster boots: one fetch for each
    // 300 ms of them, none while the page is hidden (it fetches when
    // shown again).
    function soon() {
      if (!timer && !document.hidden) timer = setTimeout(function () { timer = null; run(); }, 300);
    }
    setInterval(function () { if (!document.hidden) run(); }, POLL);
    document.addEventListener('visibilitychange', function () { if (!document.hidden) run(); });
    // The browser reconnects a stream that broke, but not one refused
    // (bootd has too many): that one is tried again in a minute.
    function connect() {
      var es = new EventSource('/api/v1/events');
      es.addEventListener('hello', function () { streaming = true; soon(); });
      es.addEventListener('node', function (m) {
        var e;
        try { e = JSON.parse(m.data); } catch (_) { return; }
        if (wants(e)) soon();
      });
      es.onerror = function () {
        streaming = false;
        status('poll', 'polling', 'The event stream is not connected: updating every 10 s');
        if (es.readyState === EventSource.CLOSED) setTimeout(connect, 60000);
      };
    }
    if (window.EventSource) connect();
    run();
  }

  // getJSON returns the body and the server's clock.
  function getJSON(url) {
    return fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) throw new Error(url + ': ' + r.status + ' ' + r.statusText);
      var date = Date.parse(r.headers.get('Date') || '');
      return r.json().then(function (body) { return { body: body, now: isNaN(date) ? Date.now() : date }; });
    });
  }

  // ---- GET /: the node table.

  // linkKey names a node for its link as ui.go does: by hostname where
  // that finds it, else by MAC.
  function linkKeys(nodes) {
    var count = {};
    nodes.forEach(function (n) { count[n.hostname || ''] = (count[n.hostname || ''] || 0) + 1; });
    return nodes.map(function (n) {
      var h = n.hostname || '';
      var ok = count[h] === 1 && /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(h) &&
        !/^\d+\.\d+\.\d+\.\d+$/.test(h) && !/^[0-9a-f]{2}(-[0-9a-f]{2}){5}$/i.test(h) &&
        !/^[0-9a-f]{4}(\.[0-9a-f]{4}){2}$/i.test(h);
      return ok ? h : n.mac;
    });
  }

  // matches is the filter, as ui.go applies it.
  function matches(n, q, stage) {
    if (stage && n.stage !== stage) return false;
    var hay = [n.hostname, n.mac, n.ip, n.stage, n.image].join(' ').toLowerCase();
    return q.toLowerCase().split(/\s+/).every(function (w) { return hay.indexOf(w) >= 0; });
  }

  // Sort values; null (nothing to show) sorts last either way.
  var sortBy = {
    host: function (n) { return n.hostname || null; },
    mac: function (n) { return n.mac; },
    ip: function (n) {
      var p = (n.ip || '').split('.');
      return p.length === 4 ? p.reduce(function (a, x) { return a * 256 + Number(x); }, 0) : (n.ip || null);
    },
    fw: function (n) { return n.firmware || null; },
    image: function (n) { return n.image ? n.image + '\u0000' + ('00000000' + (n.generation || 0)).slice(-8) : null; },
    stage: function (n) { return STAGES.indexOf(n.stage); },
    since: function (n) { return ms(n.since); },
    boot: function (n) { return n.last_boot_seconds || null; },
    line: function (n) { return (n.last_line && n.last_line.text) || null; }
  };
  function compare(a, b, dir) {
    if (a === b) return 0;
    if (a === null) return 1;
    if (b === null) return -1;
    if (typeof a === 'number' && typeof b === 'number') return dir * (a - b);
    return dir * String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function listRow(n, key, now) {
    var line = (n.last_line && n.last_line.text) || '';
    return el('tr', { 'data-mac': n.mac }, [
      el('td', { 'class': 'host' }, [
        el('a', { href: '/nodes/' + encodeURIComponent(key) }, [n.hostname || n.mac]),
        n.known ? null : ' ',
        n.known ? null : el('span', { 'class': 'tag', title: 'Not in the node table' }, ['unlisted'])
      ]),
      el('td', { 'class': 'stage' }, [badge(n.stage)]),
      el('td', { 'class': 'since' }, [agoEl(now, n.since)]),
      el('td', { 'class': 'mono' }, [n.mac]),
      el('td', { 'class': 'mono' }, [n.ip]),
      el('td', null, [n.firmware]),
      el('td', null, [image(n.image, n.generation)]),
      el('td', { 'class': 'num' }, [n.last_boot_seconds ? secs(n.last_boot_seconds) : '']),
      el('td', { 'class': 'line mono', title: line || null }, [line])
    ]);
  }

  function initList() {
    var params = new URLSearchParams(location.search);
    var st = { list: null, now: Date.now(), q: $('q').value, stage: params.get('stage') || '', key: null, dir: 1 };

    function render() {
      var tiles = document.querySelectorAll('#tiles .tile');
      for (var i = 0; i < tiles.length; i++) {
        var t = tiles[i], s = t.getAttribute('data-stage');
        t.classList.toggle('on', s === st.stage);
        if (!st.list) continue;
        var c = s ? (st.list.counts[s] || 0) : st.list.nodes.length;
        t.querySelector('b').textContent = c;
        if (s) t.classList.toggle('zero', c === 0);
      }
      var ths = document.querySelectorAll('#nodes th');
      for (var j = 0; j < ths.length; j++) {
        if (ths[j].getAttribute('data-key') === st.key) ths[j].setAttribute('aria-sort', st.dir > 0 ? 'ascending' : 'descending');
        else ths[j].removeAttribute('aria-sort');
      }
      if (!st.list) return;
      var nodes = st.list.nodes, keys = linkKeys(nodes), idx = [];
      for (var k = 0; k < nodes.length; k++) if (matches(nodes[k], st.q, st.stage)) idx.push(k);
      if (st.key) {
        var f = sortBy[st.key];
        idx.sort(function (a, b) { return compare(f(nodes[a]), f(nodes[b]), st.dir) || a - b; });
      }
      var rows = idx.map(function (k) { return listRow(nodes[k], keys[k], st.now); });
      if (!rows.length) {
        rows = [el('tr', { 'class': 'empty' }, [el('td', { colspan: 9 }, [nodes.length ?
          'No node matches the filter.' : 'No nodes yet: the node table is empty and no machine has asked bootd to boot.'])])];
      }
      $('rows').replaceChildren.apply($('rows'), rows);
      $('shown').textContent = idx.length + ' of ' + nodes.length + ' nodes';
    }

    // The filter lives in the address too, so that it can be shared.
    function remember() {
      var p = new URLSearchParams();
      if (st.q) p.set('q', st.q);
      if (st.stage) p.set('stage', st.stage);
      var s = p.toString();
      history.replaceState(null, '', s ? '?' + s : location.pathname);
    }

    $('q').addEventListener('input', function () { st.q = this.value; remember(); render(); });
    $('q').form.addEventListener('submit', function (e) { e.preventDefault(); });
    $('tiles').addEventListener('click', function (e) {
      var t = e.target.closest('.tile');
      if (!t) return;
      e.preventDefault();
      var s = t.getAttribute('data-stage');
      st.stage = s === st.stage ? '' : s;
      remember();
      render();
    });
    document.querySelector('#nodes thead').addEventListener('click', function (e) {
      var th = e.target.closest('th');
      if (!th) return;
      var k = th.getAttribute('data-key');
      if (st.key === k) st.dir = -st.dir;
      else { st.key = k; st.dir = 1; }
      render();
    });

    follow(function () { return true; }, function () {
      return getJSON('/api/v1/nodes').then(function (r) {
        st.list = r.body;
        st.list.nodes = st.list.nodes || [];
        st.list.counts = st.list.counts || {};
        st.now = ms(r.body.now) || r.now;
        render();
      });
    });
  }

  // ---- GET /nodes/{node}: one node.

  // timeline lays out the boots, newest first, as ui.go does.
  function timeline(boots, now) {
    var rows = [];
    for (var i = boots.length - 1; i >= 0; i--) {
      var st = boots[i].stages || [];
      if (!st.length) continue;
      var t0 = ms(st[0].time);
      var off = function (a) { return (ms(a.time) - t0) / 1000; };
      var k = 0;
      while (k < st.length && !ENDS[st[k].stage]) k++;
      var open = k === st.length && i === boots.length - 1;
      if (k === st.length && !open) k--;
      var end = k < st.length ? ms(st[k].time) : Math.max(now, ms(st[st.length - 1].time)); // a clock behind the records
      var span = (end - t0) / 1000;
      var width = k === 0 ? 0 : 100 - TERM * (st.length - k);
      var n = boots.length - 1 - i;
      var row = { name: n === 0 ? 'this boot' : n === 1 ? 'previous boot' : n + ' boots ago', start: t0, lost: false, bars: [], stages: [] };
      var x = 0;
      for (var j = 0; j < st.length; j++) {
        var a = st[j], t = ms(a.time), next = j + 1 < st.length ? ms(st[j + 1].time) : end, w;
        if (j >= k && k === 0) w = 100 / st.length;
        else if (j >= k) w = TERM;
        else if (span > 0) w = width * (next - t) / 1000 / span;
        else w = width / k;
        var title = a.stage + ' at ' + abs(t) + ', +' + secs(off(a)), took = '';
        if (j + 1 < st.length) {
          took = secs((next - t) / 1000);
          title += ', ' + took + ' to ' + st[j + 1].stage;
        } else if (open) {
          took = secs((next - t) / 1000) + ' so far';
          title += ', ' + took;
        }
        if (a.detail) title += ': ' + a.detail;
        row.bars.push({ stage: a.stage, x: x, w: w, label: a.stage + ' +' + off(a).toFixed(1) + 's', title: title, open: open && j === st.length - 1 });
        row.stages.push({ at: a, offset: off(a), took: took });
        x += w;
      }
      var last = st[st.length - 1], up = st.filter(function (a) { return a.stage === 'up'; })[0];
      if (last.stage === 'lost') { row.lost = true; row.outcome = 'lost after ' + secs(off(last)); }
      else if (up) row.outcome = 'up in ' + secs(off(up));
      else if (open) row.outcome = 'at ' + last.stage + ' for ' + secs((now - ms(last.time)) / 1000);
      else row.outcome = last.stage + ' after ' + secs(off(last));
      rows.push(row);
    }
    return rows;
  }

  function bootEl(r, now, open) {
    var d = el('details', { 'class': 'boot' + (r.lost ? ' lost' : ''), 'data-start': iso(r.start) }, [
      el('summary', null, [
        el('span', { 'class': 'what' }, [el('b', null, [r.name]), ' ', agoEl(now, iso(r.start)), el('br'),
          el('span', { 'class': 'outcome' }, [r.outcome])]),
        svg('svg', { 'class': 'tl', role: 'img', 'aria-label': r.name + ': ' + r.outcome }, r.bars.map(function (b) {
          return svg('svg', { 'class': 'bar s-' + b.stage + (b.open ? ' open' : ''), x: b.x.toFixed(3) + '%', width: b.w.toFixed(3) + '%', height: '100%' }, [
            svg('title', null, [b.title]), svg('rect', { width: '100%', height: '100%' }), svg('text', { x: 5, y: 17 }, [b.label])]);
        }))
      ]),
      el('table', { 'class': 'stages' }, [
        el('thead', null, [el('tr', null, [el('th', null, ['Stage']), el('th', null, ['Reached (UTC)']),
          el('th', { 'class': 'num' }, ['+s']), el('th', { 'class': 'num' }, ['Took']), el('th', null, ['Detail'])])]),
        el('tbody', null, r.stages.map(function (s) {
          return el('tr', null, [el('td', null, [badge(s.at.stage)]), el('td', { 'class': 'mono', title: abs(ms(s.at.time)) }, [clock(ms(s.at.time))]),
            el('td', { 'class': 'num' }, [s.offset.toFixed(1)]), el('td', { 'class': 'num' }, [s.took]), el('td', null, [s.at.detail])]);
        }))
      ])
    ]);
    d.open = open;
    return d;
  }

  // fitLabels shortens the timeline's labels to the stage's name, or
  // nothing, where the bar is too narrow for them.
  function fitLabels() {
    var texts = document.querySelectorAll('svg.bar text');
    for (var i = 0; i < texts.length; i++) {
      var t = texts[i], full = t.getAttribute('data-label') || t.textContent;
      t.setAttribute('data-label', full);
      var room = t.parentNode.querySelector('rect').getBoundingClientRect().width - 8;
      var tries = [full, full.split(' ')[0], ''];
      for (var j = 0; j < tries.length; j++) {
        t.textContent = tries[j];
        if (t.getComputedTextLength() <= room) break;
      }
    }
  }
  var fitting = null;
  window.addEventListener('resize', function () {
    clearTimeout(fitting);
    fitting = setTimeout(fitLabels, 100);
  });

  function fact(name, value, cls) {
    return el('div', null, [el('dt', null, [name]), el('dd', cls ? { 'class': cls } : null, [value])]);
  }

  // renderLog replaces a console or syslog box when its lines changed.
  function renderLog(id, lines) {
    var box = $(id), lastLine = lines[lines.length - 1] || {};
    var sig = lines.length + '|' + lastLine.time + '|' + lastLine.text;
    if (!box || box.getAttribute('data-sig') === sig) return;
    box.setAttribute('data-sig', sig);
    box.replaceChildren(el('div', null, lines.length ? lines.map(function (l) {
      var t = ms(l.time);
      return el('div', { 'class': 'ln' }, [el('span', { 'class': 't', title: t === null ? null : abs(t) }, [t === null ? '' : clock(t)]), l.text]);
    }) : [el('div', { 'class': 'muted' }, ['Nothing yet.'])]));
    $(id + '-n').textContent = lines.length + (lines.length === 1 ? ' line' : ' lines');
  }

  function renderNode(d, now) {
    var name = d.hostname || d.mac;
    document.title = name + ' \u00b7 bootd';
    $('name').textContent = name;
    $('stage').replaceChildren(badge(d.stage));
    $('since').replaceChildren.apply($('since'), [agoEl(now, d.since)].filter(Boolean));
    $('facts').replaceChildren(
      fact('MAC', d.mac, 'mono'), fact('IP', d.ip, 'mono'), fact('Firmware', d.firmware),
      fact('Image', image(d.image, d.generation)), fact('Node table', d.known ? 'listed' : 'not listed'),
      fact('Last seen', agoEl(now, d.last_seen)));

    // Boots keep their open or closed state; a new one opens if newest.
    var was = {}, seen = {};
    var old = document.querySelectorAll('#boots details');
    for (var i = 0; i < old.length; i++) {
      seen[old[i].getAttribute('data-start')] = true;
      was[old[i].getAttribute('data-start')] = old[i].open;
    }
    var rows = timeline(d.boots || [], now);
    var boots = rows.map(function (r, i) {
      var key = iso(r.start);
      return bootEl(r, now, seen[key] ? was[key] : i === 0);
    });
    if (!boots.length) boots = [el('p', { 'class': 'muted' }, ['No boot seen yet.'])];
    $('boots').replaceChildren.apply($('boots'), boots);
    fitLabels();

    var p = d.plan || {};
    $('plan').replaceChildren(p.error ? el('p', { 'class': 'error' }, [p.error]) : el('dl', { 'class': 'kv' }, [
      el('dt', null, ['Image']), el('dd', null, [image(p.image, p.generation)]),
      el('dt', null, ['Kernel']), el('dd', { 'class': 'mono' }, [p.kernel]),
      el('dt', null, ['Initrd']), el('dd', { 'class': 'mono' }, [p.initrd]),
      el('dt', null, ['Cmdline']), el('dd', { 'class': 'mono' }, [p.cmdline])]));
    renderLog('console', d.console || []);
    renderLog('syslog', d.syslog || []);
  }

  function initNode() {
    var mac = document.body.getAttribute('data-mac'), ip = '';
    follow(function (e) { return e.mac === mac || (!!ip && e.ip === ip); }, function () {
      return getJSON('/api/v1/nodes/' + encodeURIComponent(mac)).then(function (r) {
        ip = r.body.ip || '';
        renderNode(r.body, r.now);
      });
    });
  }

  var page = document.body.getAttribute('data-page');
  if (page === 'list') initList();
  else if (page === 'node') initNode();
})();
