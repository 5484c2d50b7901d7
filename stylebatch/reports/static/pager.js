(function () {
  var grid = document.getElementById('grid');
  if (!grid) { document.body.setAttribute('data-ready', '1'); return; }
  var per = parseInt(grid.getAttribute('data-per-page'), 10) || 24;
  var pairs = Array.prototype.slice.call(grid.querySelectorAll('.pair'));
  var pages = Math.max(1, Math.ceil(pairs.length / per));
  var prev = document.getElementById('prev'), next = document.getElementById('next');
  var label = document.getElementById('page-label'), page = 1;
  function wanted() {
    var m = /^#page=(\d+)$/.exec(window.location.hash);
    return m ? parseInt(m[1], 10) : 1;
  }
  function show(p) {
    page = Math.min(pages, Math.max(1, p));
    pairs.forEach(function (el, i) { el.hidden = Math.floor(i / per) + 1 !== page; });
    label.textContent = 'page ' + page + ' of ' + pages;
    prev.disabled = page <= 1;
    next.disabled = page >= pages;
    document.body.setAttribute('data-page', String(page));
  }
  function go(p) { window.location.hash = 'page=' + Math.min(pages, Math.max(1, p)); }
  prev.addEventListener('click', function () { go(page - 1); });
  next.addEventListener('click', function () { go(page + 1); });
  window.addEventListener('hashchange', function () { show(wanted()); });
  document.getElementById('pager').hidden = false;
  show(wanted());
  window.addEventListener('load', function () {
    var broken = Array.prototype.filter.call(document.images, function (im) { return !im.complete || !im.naturalWidth; });
    document.body.setAttribute('data-broken-images', String(broken.length));
    document.body.setAttribute('data-ready', '1');
  });
})();
