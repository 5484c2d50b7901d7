(function () {
  var errs = [];
  function flush() {
    if (errs.length && document.body) document.body.setAttribute('data-errors', errs.join(' | '));
  }
  function note(msg) { errs.push(String(msg)); flush(); }
  window.addEventListener('error', function (e) {
    var t = e.target;
    note(e.message || ('failed to load ' + ((t && (t.currentSrc || t.src || t.href)) || 'a resource').slice(0, 80)));
  }, true);
  document.addEventListener('securitypolicyviolation', function (e) {
    note('blocked by the page policy: ' + e.violatedDirective);
  });
  document.addEventListener('DOMContentLoaded', flush);  // errors noted before <body> existed
})();
