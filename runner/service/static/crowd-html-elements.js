/*
 * gtrun's own Crowd HTML Elements: what Ground Truth worker templates load from
 * https://assets.crowd.aws/crowd-html-elements.js, re-implemented for gtrun's local labeling service.
 *
 * Plain JS (custom elements v1, light DOM, no dependencies, no build step). Safe to load twice.
 * Task data (attribute values such as `text`, `categories`, `labels`, `header`) is only ever written
 * with textContent / setAttribute: this file never uses innerHTML.
 *
 * Each element contributes the JSON Ground Truth's element submits under its `name`:
 *   crowd-classifier / crowd-image-classifier          {"label": "<category>"}
 *   crowd-classifier-multi-select (+ image variant)    {"labels": ["a", "b"]}   (exclusion category → [])
 *   crowd-bounding-box    {"boundingBoxes": [{label, left, top, width, height}] (ints, image pixels),
 *                          "inputImageProperties": {height, width}} (+ "initialValueModified" when
 *                          initial-value was given)
 *   crowd-entity-annotation  {"entities": [{label, startOffset, endOffset}]}  (code points, end exclusive)
 *   crowd-input / crowd-text-area   "<text>"
 *   crowd-checkbox        {"<value>": true|false}, boxes with the same name merged into one object
 *   crowd-radio-button    {"<value>": true|false}, buttons with the same name merged
 *   native <input>/<textarea>/<select name=…> inside crowd-form: the value string; a checkbox or
 *     radio only when checked (its value, default "on"; several checked same-name checkboxes → an
 *     array of values); <select multiple> → array; disabled controls and buttons/files are skipped.
 *
 * Submission contract (crowd-form.submit(): the submit button, or Ctrl/Cmd+Enter anywhere):
 *   1. dispatch a cancellable, bubbling `submit` Event on <crowd-form> (so `form.onsubmit = fn`,
 *      `onsubmit="…"` and addEventListener('submit') all run and may change inputs; preventDefault()
 *      or `return false` stops the submission; a handler that throws stops it too, with an alert);
 *   2. validate (classifiers need a choice, crowd-input `required`/patterns, native constraints…);
 *      on failure show a crowd-alert and stop;
 *   3. answer = collectAnswer(form): one object keyed by element `name`;
 *   4. no window.gtrunTask → show the answer JSON in a crowd-alert (template preview) and stop;
 *   5. POST gtrunTask.submitUrl, JSON {"answer": answer, "token": gtrunTask.token}; buttons disabled
 *      while in flight; 2xx with {"next": url} → location.href = url (buttons stay disabled);
 *      2xx without next → success alert (buttons stay disabled); error → crowd-alert with the
 *      response's `message` (or `detail`), buttons re-enabled, the answer kept for another try;
 *      an error with {"next": url} (the task is no longer this worker's: released and taken,
 *      expired, answered in another tab, its job ended) → a lasting warning with the message and a
 *      "Next task" link to url, the bar's progress from its `progress`, Submit and Release task
 *      left disabled (the page's task is dead: nothing to submit or give back).
 *
 * Release task (gtrun's task page): the service puts a <form id="gtrun-release"> in its top bar;
 * crowd-form adds a button for it next to its own Submit button. A task page left unanswered (tab
 * closed, another address, a reload) sends gtrunTask.releaseUrl {token, view} with sendBeacon, so
 * the task goes back to the queue instead of waiting out its time limit; the service keeps the task
 * when a newer page of the same worker shows it (a reload loads the new page before the old one goes).
 *
 * Also: window.crowdHtmlElements = {collectAnswer(form), validate(form), parseLoose(text), version}.
 * worker.css (next to this file) is added to the page unless the page already links a worker.css.
 */
(function () {
  'use strict';

  if (window.crowdHtmlElements && window.crowdHtmlElements.gtrun) return; // loaded twice: keep the first

  var VERSION = 'gtrun-1';
  var INTERNAL = 'data-crowd-internal';
  var PALETTE = ['#d6336c', '#2b8a3e', '#1c7ed6', '#e8590c', '#7048e8',
                 '#0c8599', '#c2255c', '#8f5a00', '#5c940d', '#364fc7'];
  var IS_MAC = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent || '');
  var SUBMIT_KEYS = IS_MAC ? '\u2318+Enter' : 'Ctrl+Enter';
  var pageSettled = false; // the task was answered or released here: nothing to give back on leaving

  // --------------------------------------------------------------------------------------------
  // Helpers

  /** Create an element. props: text (textContent), class, on<event>, style {prop: value}, or an
   *  attribute (true → empty attribute, false/null → none). Children: nodes or strings (as text). */
  function h(tag, props) {
    var el = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (key) {
        var value = props[key];
        if (value === null || value === undefined || value === false) return;
        if (key === 'text') el.textContent = String(value);
        else if (key === 'class') el.className = value;
        else if (key === 'style') Object.keys(value).forEach(function (p) { el.style.setProperty(p, value[p]); });
        else if (key.slice(0, 2) === 'on' && typeof value === 'function') el.addEventListener(key.slice(2), value);
        else el.setAttribute(key, value === true ? '' : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) appendKids(el, arguments[i]);
    return el;
  }

  function appendKids(el, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) { kid.forEach(function (k) { appendKids(el, k); }); return; }
    el.append(kid); // strings become text nodes
  }

  function onReady(fn) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fn, { once: true });
    else fn();
  }

  var uid = 0;
  function nextId(prefix) { uid += 1; return 'crowd-' + prefix + '-' + uid; }

  function color(i) { return PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length]; }

  /** JSON, or the JS-ish literals Ground Truth's own examples use: ['a', 'b'], { text: 'None' }.
   *  A small parser, never eval. */
  function parseLoose(src) {
    var s = String(src === null || src === undefined ? '' : src);
    try { return JSON.parse(s); } catch (e) { /* fall through to the relaxed parser */ }
    var i = 0;
    function fail() { throw new SyntaxError('unexpected ' + (i < s.length ? JSON.stringify(s[i]) : 'end') + ' at ' + i); }
    function ws() { while (i < s.length && /\s/.test(s[i])) i++; }
    function str() {
      var q = s[i++], out = '';
      while (i < s.length && s[i] !== q) {
        if (s[i] === '\\') {
          i++;
          var c = s[i++];
          if (c === 'u') { out += String.fromCharCode(parseInt(s.substr(i, 4), 16)); i += 4; }
          else out += ({ n: '\n', t: '\t', r: '\r', b: '\b', f: '\f' })[c] || c;
        } else out += s[i++];
      }
      if (s[i] !== q) fail();
      i++;
      return out;
    }
    function ident() {
      var m = /^[A-Za-z_$][\w$]*/.exec(s.slice(i));
      if (!m) fail();
      i += m[0].length;
      return m[0];
    }
    function put(obj, key, value) {
      Object.defineProperty(obj, key, { value: value, enumerable: true, writable: true, configurable: true });
    }
    function value() {
      ws();
      var c = s[i];
      if (c === '{') {
        i++;
        var obj = {};
        for (;;) {
          ws();
          if (s[i] === '}') { i++; return obj; }
          var key = (s[i] === '"' || s[i] === "'") ? str() : ident();
          ws();
          if (s[i++] !== ':') { i--; fail(); }
          put(obj, key, value());
          ws();
          if (s[i] === ',') { i++; continue; }
          if (s[i] === '}') { i++; return obj; }
          fail();
        }
      }
      if (c === '[') {
        i++;
        var arr = [];
        for (;;) {
          ws();
          if (s[i] === ']') { i++; return arr; }
          arr.push(value());
          ws();
          if (s[i] === ',') { i++; continue; }
          if (s[i] === ']') { i++; return arr; }
          fail();
        }
      }
      if (c === '"' || c === "'") return str();
      var num = /^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/.exec(s.slice(i));
      if (num) { i += num[0].length; return Number(num[0]); }
      var word = ident();
      if (word === 'true') return true;
      if (word === 'false') return false;
      if (word === 'null') return null;
      i -= word.length;
      return fail();
    }
    var result = value();
    ws();
    if (i !== s.length) fail();
    return result;
  }

  /** Parse a JSON-ish attribute; on error show it on the element and return fallback. */
  function attrJSON(el, name, fallback) {
    if (!el.hasAttribute(name)) return fallback;
    var raw = el.getAttribute(name);
    if (raw.trim() === '') return fallback;
    try { return parseLoose(raw); } catch (err) {
      elementError(el, '<' + el.localName + '> attribute ' + name + ' is not valid JSON: ' + err.message);
      return fallback;
    }
  }

  function elementError(el, message) {
    console.error('crowd-html-elements:', message);
    var box = h('div', { class: 'crowd-element-error', role: 'alert', text: message });
    el.prepend(box);
  }

  /** Category / label lists: strings or objects with a `label` (or `text`) field. */
  function labelNames(list) {
    if (!Array.isArray(list)) return [];
    return list.map(function (item) {
      if (item !== null && typeof item === 'object') return String(item.label !== undefined ? item.label : item.text);
      return String(item);
    });
  }

  function isNativeControl(el) {
    return el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement;
  }

  function isTypingTarget(el) {
    if (!el || !(el instanceof Element)) return false;
    if (el.isContentEditable) return true;
    if (el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement) return true;
    if (el instanceof HTMLInputElement) {
      return ['checkbox', 'radio', 'button', 'submit', 'reset', 'range', 'color', 'file', 'image'].indexOf(el.type) < 0;
    }
    return false;
  }

  function instructionsPanel(shortEl, fullEl) {
    if (!shortEl && !fullEl) return null;
    var aside = h('aside', { class: 'crowd-instructions-panel', 'aria-label': 'Instructions' });
    if (shortEl) {
      aside.append(h('section', { class: 'crowd-short-instructions' },
        h('h3', { class: 'crowd-panel-title', text: 'Instructions' }), shortEl));
    }
    if (fullEl) {
      aside.append(h('details', { class: 'crowd-full-instructions' },
        h('summary', { text: fullEl.getAttribute('header') || 'Full instructions' }), fullEl));
    }
    return aside;
  }

  // --------------------------------------------------------------------------------------------
  // Base class: build once the element's children are parsed (DOMContentLoaded for parser-created
  // elements: connectedCallback runs before the children exist).

  class CrowdElement extends HTMLElement {
    connectedCallback() {
      if (this._crowdBuilt || this._crowdPending) return;
      this._crowdPending = true;
      var self = this;
      onReady(function () {
        self._crowdPending = false;
        if (self._crowdBuilt) return;
        self._crowdBuilt = true;
        try { self._build(); } catch (err) {
          elementError(self, '<' + self.localName + '> failed to render: ' + (err && err.message));
        }
        self.setAttribute('data-crowd-ready', '');
      });
    }
    attributeChangedCallback(name, oldValue, newValue) {
      if (this._crowdBuilt && oldValue !== newValue) this._attributeChanged(name);
    }
    _attributeChanged() {}
    _build() {}
    _region(tag) {
      for (var i = 0; i < this.children.length; i++) if (this.children[i].localName === tag) return this.children[i];
      return null;
    }
    /** Header + main column + instructions side panel; moves the author's regions into place. */
    _layout(extraRegions) {
      var shortEl = this._region('short-instructions');
      var fullEl = this._region('full-instructions');
      var regions = {};
      (extraRegions || []).forEach(function (tag) { regions[tag] = this._region(tag); }, this);
      var leftovers = Array.prototype.filter.call(this.children, function (c) {
        return c !== shortEl && c !== fullEl && !Object.keys(regions).some(function (k) { return regions[k] === c; });
      });
      var headerId = nextId('header');
      var header = h('h2', { class: 'crowd-header', id: headerId, text: this.getAttribute('header') || '' });
      if (!this.getAttribute('header')) header.hidden = true;
      var main = h('div', { class: 'crowd-annotation-main' }, header);
      var panel = instructionsPanel(shortEl, fullEl);
      var layout = h('div', { class: 'crowd-annotation' + (panel ? '' : ' crowd-no-panel') }, main, panel);
      this.append(layout);
      var extra = leftovers.length ? h('div', { class: 'crowd-extra' }, leftovers) : null;
      return { main: main, header: header, headerId: headerId, regions: regions, extra: extra };
    }
    _setHeader() {
      if (!this._header) return;
      this._header.textContent = this.getAttribute('header') || '';
      this._header.hidden = !this.getAttribute('header');
    }
    _changed() {
      this.classList.remove('crowd-invalid');
      this.dispatchEvent(new Event('change', { bubbles: true }));
    }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-form

  class CrowdForm extends CrowdElement {
    _build() {
      var self = this;
      var panel = instructionsPanel(this._region('short-instructions'), this._region('full-instructions'));
      this._alerts = h('div', { class: 'crowd-form-alerts', 'aria-live': 'polite' });
      if (panel) { panel.classList.add('crowd-form-instructions'); this.prepend(panel); }
      this.prepend(this._alerts);
      if (!this.querySelector('crowd-button[form-action="submit"], button[type="submit"], input[type="submit"]')) {
        // The service's Release task form (in its top bar) gets a button next to Submit too.
        var release = window.gtrunTask && document.getElementById('gtrun-release');
        this.append(h('div', { class: 'crowd-form-actions' },
          h('crowd-button', { 'form-action': 'submit', variant: 'primary' }, 'Submit'),
          release ? h('button', { type: 'submit', form: 'gtrun-release', class: 'crowd-btn crowd-release',
                                  'data-crowd-internal': true, // not crowd-form's submit: the form's
                                  title: 'Give this task back now, so that another worker can take it',
                                  text: 'Release task' }) : null,
          h('span', { class: 'crowd-form-hint', text: 'or press ' + SUBMIT_KEYS })));
      }
      function clearInvalid(e) { if (e.target && e.target.classList && isNativeControl(e.target)) e.target.classList.remove('crowd-invalid'); }
      this.addEventListener('input', clearInvalid);
      this.addEventListener('change', clearInvalid);
      // Native submit buttons submit the crowd-form (it is not a real <form>).
      this.addEventListener('click', function (e) {
        var btn = e.target.closest && e.target.closest('button[type="submit"], input[type="submit"]');
        if (btn && self.contains(btn) && !btn.hasAttribute(INTERNAL)) { e.preventDefault(); self.submit(); }
      });
    }

    get value() { return collectAnswer(this); }

    _showAlert(type, content, keep) {
      if (!this._alerts) { this._alerts = h('div', { class: 'crowd-form-alerts', 'aria-live': 'polite' }); this.prepend(this._alerts); }
      this._alerts.textContent = '';
      var alert = h('crowd-alert', { type: type, dismissible: !keep }, content);
      this._alerts.append(alert);
      if (alert.scrollIntoView) alert.scrollIntoView({ block: 'nearest' });
      return alert;
    }

    _submitButtons() {
      return Array.prototype.filter.call(
        this.querySelectorAll('crowd-button[form-action="submit"], button[type="submit"], input[type="submit"]'),
        function (b) { return !b.hasAttribute(INTERNAL); });
    }

    _setBusy(busy) {
      this._busy = busy;
      this.setAttribute('aria-busy', busy ? 'true' : 'false');
      if (busy) {
        this._disabledByUs = this._submitButtons().filter(function (b) {
          if (b.hasAttribute('disabled')) return false;
          if (b.localName === 'crowd-button') { b.setAttribute('disabled', ''); b.setAttribute('loading', ''); }
          else b.disabled = true;
          return true;
        });
      } else {
        (this._disabledByUs || []).forEach(function (b) {
          if (b.localName === 'crowd-button') { b.removeAttribute('disabled'); b.removeAttribute('loading'); }
          else b.disabled = false;
        });
        this._disabledByUs = [];
      }
    }

    /** Run the template's submit handlers; false when one cancelled the submission or threw. */
    _runHandlers() {
      var errors = [];
      function onError(ev) { errors.push(ev.message || String(ev.error)); }
      window.addEventListener('error', onError);
      var event = new Event('submit', { bubbles: true, cancelable: true });
      var proceed;
      try { proceed = this.dispatchEvent(event); } finally { window.removeEventListener('error', onError); }
      if (errors.length) {
        this._showAlert('error', ['The task page\u2019s submit handler failed, nothing was submitted: ', errors[0]]);
        return false;
      }
      return proceed && !event.defaultPrevented;
    }

    submit() {
      if (this._busy) return Promise.resolve(false);
      if (!this._runHandlers()) return Promise.resolve(false);
      var problems = validate(this);
      if (problems.length) {
        this._showAlert('error', [
          h('strong', { text: 'Please complete the task before submitting:' }),
          h('ul', null, problems.map(function (p) { return h('li', { text: p.message }); }))]);
        var first = problems[0].element;
        var target = first._focusTarget ? first._focusTarget() : first;
        if (target && target.focus) target.focus({ preventScroll: false });
        return Promise.resolve(false);
      }
      var answer = collectAnswer(this);
      var task = window.gtrunTask;
      if (!task || typeof task !== 'object') {
        console.log('crowd-form answer (preview, not submitted):', answer);
        this._showAlert('info', [
          h('strong', { text: 'Preview: this answer would be submitted' }),
          h('pre', { class: 'crowd-answer-preview', text: JSON.stringify(answer, null, 2) })]);
        this.dispatchEvent(new CustomEvent('crowd-preview', { bubbles: true, detail: { answer: answer } }));
        return Promise.resolve(false);
      }
      if (!task.submitUrl) {
        this._showAlert('error', 'This task page has no submit address (gtrunTask.submitUrl).');
        return Promise.resolve(false);
      }
      var self = this;
      this._setBusy(true);
      return fetch(task.submitUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ answer: answer, token: task.token }),
        credentials: 'same-origin'
      }).then(function (response) {
        return response.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          if (response.ok) {
            pageSettled = true;
            if (data && typeof data.next === 'string' && data.next) {
              window.location.href = data.next;
            } else {
              self._showAlert('success', 'Your answer was submitted.');
            }
            return true;
          }
          var message = (data && (data.message || data.detail)) ||
            ('The answer was not accepted (HTTP ' + response.status + (response.statusText ? ' ' + response.statusText : '') + ').');
          message = typeof message === 'string' ? message : JSON.stringify(message);
          if (data && typeof data.next === 'string' && data.next) { self._taskGone(message, data); return false; }
          throw new Error(message);
        });
      }).catch(function (err) {
        self._setBusy(false);
        self._showAlert('error', ['Submission failed: ', (err && err.message) || String(err)]);
        return false;
      });
    }
  }

  /** The answer was refused because the task is no longer this worker's (see the header comment):
   *  say so, keep the page from submitting or releasing it again, and offer the next task. */
  CrowdForm.prototype._taskGone = function (message, data) {
    pageSettled = true; // the task is not this page's to give back any more
    this.setAttribute('data-crowd-task-gone', '');
    (this._disabledByUs || []).forEach(function (b) { b.removeAttribute('loading'); }); // still disabled
    document.querySelectorAll('#gtrun-release button, button[form="gtrun-release"]').forEach(function (b) {
      b.disabled = true;
    });
    var progress = data.progress;
    if (progress && typeof progress === 'object') {
      var bar = document.querySelector('header.gtrun-bar progress.gtrun-bar-progress');
      var count = document.querySelector('header.gtrun-bar .gtrun-progress');
      if (bar) { bar.max = Math.max(Number(progress.total) || 0, 1); bar.value = Number(progress.labeled) || 0; }
      if (count && typeof progress.text === 'string') count.textContent = progress.text;
    }
    var next = h('a', { class: 'crowd-btn crowd-next-task', href: data.next, text: 'Next task' });
    var text = message.replace(/[.\s]*$/, '');
    this._showAlert('warning', [
      h('strong', { text: 'Your answer was not recorded: ' }),
      text.charAt(0).toUpperCase() + text.slice(1) + '.',
      h('div', { class: 'crowd-alert-actions' }, next)], true);
    next.focus();
  };

  /** One answer object keyed by element name (see the header comment for the shapes). */
  function collectAnswer(form) {
    var answer = {};
    var nativeChecks = {};
    if (!form) return answer;
    var all = form.querySelectorAll('*');
    for (var i = 0; i < all.length; i++) {
      var el = all[i];
      if (el.closest('[' + INTERNAL + ']')) continue;
      if (typeof el._crowdAnswer === 'function') {
        var name = el.getAttribute('name');
        if (!name) continue;
        var value = el._crowdAnswer();
        if (value === undefined) continue;
        var prev = answer[name];
        if (el._crowdMerge && prev && typeof prev === 'object' && !Array.isArray(prev)) Object.assign(prev, value);
        else answer[name] = value;
      } else if (isNativeControl(el)) {
        if (!el.name || el.disabled) continue;
        if (el instanceof HTMLInputElement) {
          var type = el.type;
          if (['submit', 'button', 'reset', 'image', 'file'].indexOf(type) >= 0) continue;
          if (type === 'checkbox') {
            if (!el.checked) continue;
            if (nativeChecks[el.name]) {
              var cur = answer[el.name];
              answer[el.name] = Array.isArray(cur) ? cur.concat([el.value]) : [cur, el.value];
            } else {
              answer[el.name] = el.value;
              nativeChecks[el.name] = true;
            }
            continue;
          }
          if (type === 'radio') { if (el.checked) answer[el.name] = el.value; continue; }
          answer[el.name] = el.value;
        } else if (el instanceof HTMLSelectElement && el.multiple) {
          answer[el.name] = Array.prototype.map.call(el.selectedOptions, function (o) { return o.value; });
        } else {
          answer[el.name] = el.value;
        }
      }
    }
    return answer;
  }

  /** [{element, message}] for every field that blocks submission. */
  function validate(form) {
    var problems = [];
    var all = form.querySelectorAll('*');
    for (var i = 0; i < all.length; i++) {
      var el = all[i];
      if (el.closest('[' + INTERNAL + ']')) continue;
      var message = '';
      if (typeof el._crowdValidate === 'function') {
        message = el._crowdValidate() || '';
      } else if (isNativeControl(el) && !el.disabled && el.willValidate && !el.checkValidity()) {
        var label = (el.labels && el.labels[0] && el.labels[0].textContent.trim()) ||
          el.getAttribute('aria-label') || el.name || el.id || el.localName;
        message = label + ': ' + el.validationMessage;
      }
      if (message) {
        el.classList.add('crowd-invalid');
        problems.push({ element: el, message: message });
      }
    }
    return problems;
  }

  // --------------------------------------------------------------------------------------------
  // crowd-button

  class CrowdButton extends CrowdElement {
    static get observedAttributes() { return ['disabled', 'loading', 'variant']; }
    _build() {
      var self = this;
      var btn = h('button', { type: 'button', class: 'crowd-btn' });
      btn.setAttribute(INTERNAL, '');
      while (this.firstChild) btn.append(this.firstChild);
      if (this.hasAttribute('icon-url')) {
        btn.prepend(h('img', { class: 'crowd-btn-icon', src: this.getAttribute('icon-url'), alt: '' }));
      }
      this.append(btn);
      this._btn = btn;
      this._sync();
      btn.addEventListener('click', function () {
        if (self.hasAttribute('disabled')) return;
        if (self.getAttribute('form-action') === 'submit') {
          var form = self.closest('crowd-form');
          if (form && form.submit) form.submit();
        } else if (self.getAttribute('href')) {
          window.open(self.getAttribute('href'), self.getAttribute('target') || '_self');
        }
      });
    }
    _attributeChanged() { this._sync(); }
    _sync() {
      if (!this._btn) return;
      this._btn.disabled = this.hasAttribute('disabled');
      if (this.hasAttribute('loading')) this._btn.setAttribute('aria-busy', 'true');
      else this._btn.removeAttribute('aria-busy');
    }
    get disabled() { return this.hasAttribute('disabled'); }
    set disabled(v) { if (v) this.setAttribute('disabled', ''); else this.removeAttribute('disabled'); }
    focus(opts) { if (this._btn) this._btn.focus(opts); else HTMLElement.prototype.focus.call(this, opts); }
    click() { if (this._btn) this._btn.click(); else HTMLElement.prototype.click.call(this); }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-alert

  class CrowdAlert extends CrowdElement {
    _build() {
      var self = this;
      var type = this.getAttribute('type') || 'info';
      this.setAttribute('role', type === 'error' || type === 'warning' ? 'alert' : 'status');
      var content = h('div', { class: 'crowd-alert-content' });
      while (this.firstChild) content.append(this.firstChild);
      this.append(content);
      if (this.hasAttribute('dismissible')) {
        this.append(h('button', {
          type: 'button', class: 'crowd-alert-dismiss', 'aria-label': 'Dismiss', text: '\u00d7',
          onclick: function () { self.remove(); }
        }));
      }
    }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-instructions: a link or button that opens a dialog with the four regions

  class CrowdInstructions extends CrowdElement {
    _build() {
      var self = this;
      var parts = [
        ['short-summary', 'Summary'], ['detailed-instructions', 'Detailed instructions'],
        ['positive-example', 'Good examples'], ['negative-example', 'Bad examples']];
      var titleId = nextId('instructions');
      var body = h('div', { class: 'crowd-dialog-body' });
      parts.forEach(function (part) {
        var found = Array.prototype.filter.call(self.children, function (c) { return c.localName === part[0]; });
        if (!found.length) return;
        body.append(h('section', { class: 'crowd-instructions-section crowd-' + part[0] },
          h('h3', { text: part[1] }), found));
      });
      var dialog = h('dialog', { class: 'crowd-dialog', 'aria-labelledby': titleId },
        h('div', { class: 'crowd-dialog-head' },
          h('h2', { id: titleId, text: 'Instructions' }),
          h('button', { type: 'button', class: 'crowd-dialog-close', 'aria-label': 'Close instructions', text: '\u00d7',
            onclick: function () { dialog.close(); } })),
        body);
      dialog.addEventListener('click', function (e) { if (e.target === dialog) dialog.close(); });
      var text = this.getAttribute('link-text') || 'Click for instructions';
      var trigger = h('button', {
        type: 'button', class: this.getAttribute('link-type') === 'button' ? 'crowd-btn' : 'crowd-link',
        'aria-haspopup': 'dialog', text: text,
        onclick: function () { if (dialog.showModal) dialog.showModal(); else dialog.setAttribute('open', ''); }
      });
      Array.prototype.slice.call(this.childNodes).forEach(function (n) { if (n.nodeType === 3 && !n.textContent.trim()) n.remove(); });
      this.append(trigger, dialog);
      this._dialog = dialog;
    }
    open() { if (this._dialog) this._dialog.showModal(); }
    close() { if (this._dialog) this._dialog.close(); }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-classifier (+ image variant)

  class CrowdClassifier extends CrowdElement {
    static get observedAttributes() { return ['categories', 'header']; }
    _build() {
      var parts = this._layout(['classification-target']);
      this._header = parts.header;
      var target = this._target(parts.regions['classification-target']);
      if (target) parts.main.append(h('div', { class: 'crowd-target' }, target));
      this._group = h('div', { class: 'crowd-categories', role: 'group', 'aria-labelledby': parts.headerId });
      parts.main.append(this._group);
      if (parts.extra) parts.main.append(parts.extra);
      this._selected = null;
      this._renderCategories();
    }
    _target(region) { return region; }
    _attributeChanged(name) {
      if (name === 'header') this._setHeader();
      else this._renderCategories();
    }
    _renderCategories() {
      var self = this;
      this._categories = labelNames(attrJSON(this, 'categories', []));
      if (this._categories.indexOf(this._selected) < 0) this._selected = null;
      this._group.textContent = '';
      this._buttons = this._categories.map(function (cat, i) {
        var btn = h('button', {
          type: 'button', class: 'crowd-category', 'aria-pressed': 'false',
          onclick: function () { self._choose(i); }
        }, i < 9 ? h('kbd', { 'aria-hidden': 'true', text: String(i + 1) }) : null, h('span', { text: cat }));
        btn.setAttribute(INTERNAL, '');
        self._group.append(btn);
        return btn;
      });
      this._sync();
    }
    _choose(i) {
      this._selected = this._categories[i];
      this._sync();
      this._changed();
    }
    _sync() {
      var sel = this._selected;
      (this._buttons || []).forEach(function (b, i) { b.setAttribute('aria-pressed', String(this._categories[i] === sel)); }, this);
    }
    _onKey(e) {
      var n = Number(e.key);
      if (e.key.length === 1 && n >= 1 && n <= 9 && n <= this._categories.length) {
        this._choose(n - 1);
        return true;
      }
      return false;
    }
    _focusTarget() { return this._buttons && this._buttons[0]; }
    get value() { return this._selected; }
    set value(v) { if (this._categories && this._categories.indexOf(v) >= 0) { this._selected = v; this._sync(); } }
    _crowdAnswer() { return this._selected === null || this._selected === undefined ? undefined : { label: this._selected }; }
    _crowdValidate() {
      if (this._selected === null || this._selected === undefined) {
        return 'Choose a category' + (this.getAttribute('header') ? ': \u201c' + this.getAttribute('header') + '\u201d' : '.');
      }
      return '';
    }
  }

  class CrowdImageClassifier extends CrowdClassifier {
    static get observedAttributes() { return ['categories', 'header', 'src']; }
    _target() {
      this._img = h('img', { class: 'crowd-target-image', src: this.getAttribute('src') || '', alt: this.getAttribute('header') || 'Image to classify' });
      return this._img;
    }
    _attributeChanged(name) {
      if (name === 'src' && this._img) this._img.src = this.getAttribute('src') || '';
      else super._attributeChanged(name);
    }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-classifier-multi-select (+ image variant)

  class CrowdClassifierMulti extends CrowdClassifier {
    static get observedAttributes() { return ['categories', 'header', 'exclusion-category']; }
    _renderCategories() {
      var self = this;
      if (!this._chosen) this._chosen = new Set();
      this._exclusionChosen = !!this._exclusionChosen;
      this._categories = labelNames(attrJSON(this, 'categories', []));
      this._chosen.forEach(function (c) { if (self._categories.indexOf(c) < 0) self._chosen.delete(c); });
      this._group.textContent = '';
      this._buttons = this._categories.map(function (cat, i) {
        var btn = h('button', {
          type: 'button', class: 'crowd-category crowd-category-multi', 'aria-pressed': 'false',
          onclick: function () { self._toggle(i); }
        }, i < 9 ? h('kbd', { 'aria-hidden': 'true', text: String(i + 1) }) : null, h('span', { text: cat }));
        btn.setAttribute(INTERNAL, '');
        self._group.append(btn);
        return btn;
      });
      var exclusion = attrJSON(this, 'exclusion-category', null);
      this._exclusionButton = null;
      if (exclusion) {
        var text = typeof exclusion === 'object' ? String(exclusion.text !== undefined ? exclusion.text : 'None of the above') : String(exclusion);
        this._exclusionButton = h('button', {
          type: 'button', class: 'crowd-category crowd-category-exclusion', 'aria-pressed': 'false',
          onclick: function () { self._toggleExclusion(); }
        }, h('kbd', { 'aria-hidden': 'true', text: '0' }), h('span', { text: text }));
        this._exclusionButton.setAttribute(INTERNAL, '');
        this._group.append(this._exclusionButton);
      }
      this._sync();
    }
    _toggle(i) {
      var cat = this._categories[i];
      if (this._chosen.has(cat)) this._chosen.delete(cat); else this._chosen.add(cat);
      this._exclusionChosen = false;
      this._sync();
      this._changed();
    }
    _toggleExclusion() {
      this._exclusionChosen = !this._exclusionChosen;
      if (this._exclusionChosen) this._chosen.clear();
      this._sync();
      this._changed();
    }
    _sync() {
      (this._buttons || []).forEach(function (b, i) { b.setAttribute('aria-pressed', String(this._chosen.has(this._categories[i]))); }, this);
      if (this._exclusionButton) this._exclusionButton.setAttribute('aria-pressed', String(this._exclusionChosen));
    }
    _onKey(e) {
      var n = Number(e.key);
      if (e.key === '0' && this._exclusionButton) { this._toggleExclusion(); return true; }
      if (e.key.length === 1 && n >= 1 && n <= 9 && n <= this._categories.length) { this._toggle(n - 1); return true; }
      return false;
    }
    get value() { return this._crowdAnswer().labels; }
    set value(list) {
      this._chosen = new Set((list || []).filter(function (c) { return this._categories.indexOf(c) >= 0; }, this));
      this._sync();
    }
    _crowdAnswer() {
      var chosen = this._chosen || new Set();
      return { labels: (this._categories || []).filter(function (c) { return chosen.has(c); }) };
    }
    _crowdValidate() { return ''; }
  }

  class CrowdImageClassifierMulti extends CrowdClassifierMulti {
    static get observedAttributes() { return ['categories', 'header', 'exclusion-category', 'src']; }
    _target() { return CrowdImageClassifier.prototype._target.call(this); }
    _attributeChanged(name) {
      if (name === 'src' && this._img) this._img.src = this.getAttribute('src') || '';
      else super._attributeChanged(name);
    }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-bounding-box

  var MIN_DRAG_CSS_PX = 3;
  var ZOOM_STEP = 1.25, ZOOM_MIN = 0.05, ZOOM_MAX = 8;

  class CrowdBoundingBox extends CrowdElement {
    static get observedAttributes() { return ['src', 'labels', 'header', 'initial-value']; }

    _build() {
      var self = this;
      var parts = this._layout();
      this._header = parts.header;
      this._boxes = [];
      this._selectedIndex = -1;
      this._current = 0;

      this._labelBar = h('div', { class: 'crowd-label-bar', role: 'group', 'aria-label': 'Label for new boxes' });
      this._deleteButton = h('button', {
        type: 'button', class: 'crowd-btn crowd-btn-small', disabled: true, text: 'Delete box',
        onclick: function () { self._deleteSelected(); }
      });
      this._deleteButton.setAttribute(INTERNAL, '');
      // Zoom: the image fits the window at first (`_zoom` null); a receipt or page larger than the
      // screen is zoomed in to read and box its small print, the frame scrolling around it.
      this._zoom = null;
      this._zoomLabel = h('span', { class: 'crowd-zoom-level', 'aria-live': 'polite' });
      var zoomButton = function (text, label, action) {
        var b = h('button', { type: 'button', class: 'crowd-btn crowd-btn-small', text: text, 'aria-label': label,
          title: label, onclick: function () { action(); } });
        b.setAttribute(INTERNAL, '');
        return b;
      };
      var zoom = h('div', { class: 'crowd-zoom', role: 'group', 'aria-label': 'Zoom' },
        zoomButton('\u2212', 'Zoom out (-)', function () { self._zoomBy(1 / ZOOM_STEP); }),
        this._zoomLabel,
        zoomButton('+', 'Zoom in (+)', function () { self._zoomBy(ZOOM_STEP); }),
        zoomButton('Fit', 'Fit the image (0)', function () { self._zoomTo(null); }));
      // Undo / Redo (Ctrl+Z, Ctrl+Shift+Z or Ctrl+Y): every change of the boxes is a step.
      this._undone = [];
      this._redone = [];
      this._undoButton = zoomButton('Undo', 'Undo (Ctrl+Z)', function () { self._history(self._undone, self._redone, 'Undone.'); });
      this._redoButton = zoomButton('Redo', 'Redo (Ctrl+Shift+Z)', function () { self._history(self._redone, self._undone, 'Redone.'); });
      this._undoButton.removeAttribute('aria-label');
      this._redoButton.removeAttribute('aria-label');
      var history = h('div', { class: 'crowd-zoom', role: 'group', 'aria-label': 'History' }, this._undoButton, this._redoButton);
      var toolbar = h('div', { class: 'crowd-toolbar' }, this._labelBar, this._deleteButton, history, zoom);

      this._img = h('img', { class: 'crowd-bbox-image', draggable: 'false', alt: this.getAttribute('header') || 'Image to annotate' });
      this._layer = h('div', { class: 'crowd-bbox-layer' });
      this._status = h('p', { class: 'crowd-status', 'aria-live': 'polite' });
      this._stage = h('div', {
        class: 'crowd-bbox-stage', tabindex: '0', role: 'application',
        'aria-label': 'Image. Drag to draw a box with the chosen label; drag a box to move it, its corners to resize it; Delete removes the selected box.'
      }, this._img, this._layer);
      this._stage.setAttribute(INTERNAL, '');
      this._list = h('ol', { class: 'crowd-bbox-list', 'aria-label': 'Boxes' });
      this._frame = h('div', { class: 'crowd-bbox-frame' }, this._stage);
      parts.main.append(toolbar,
        h('p', { class: 'crowd-hint', text: 'Choose a label (keys 1\u20139), then drag on the image to draw a box. Click a box to select it; drag to move, drag a corner to resize; Delete or Backspace removes it. + and - zoom, 0 fits the image.' }),
        this._frame, this._status, this._list);
      if (parts.extra) parts.main.append(parts.extra);

      this._img.addEventListener('load', function () { self._loaded = true; self._failed = false; self._render(); self._showZoom(); });
      this._img.addEventListener('error', function () {
        self._loaded = false; self._failed = true;
        self._status.textContent = 'The image could not be loaded.';
      });
      this._stage.addEventListener('pointerdown', function (e) { self._pointerDown(e); });
      this._stage.addEventListener('pointermove', function (e) { self._pointerMove(e); });
      this._stage.addEventListener('pointerup', function (e) { self._pointerUp(e); });
      this._stage.addEventListener('pointercancel', function (e) { self._pointerUp(e, true); });
      this._stage.addEventListener('keydown', function (e) { if (self._onKey(e)) { e.preventDefault(); e.stopPropagation(); } });

      this._renderLabels();
      this._loadInitial();
      this._img.src = this.getAttribute('src') || '';
      if (this._img.complete && this._img.naturalWidth) { this._loaded = true; this._render(); }
    }

    _attributeChanged(name) {
      if (name === 'header') this._setHeader();
      else if (name === 'labels') { this._renderLabels(); this._render(); }
      else if (name === 'initial-value') { this._loadInitial(); this._render(); }
      else if (name === 'src') { this._loaded = false; this._img.src = this.getAttribute('src') || ''; }
    }

    _renderLabels() {
      var self = this;
      this._labels = labelNames(attrJSON(this, 'labels', []));
      if (this._current >= this._labels.length) this._current = 0;
      this._labelBar.textContent = '';
      this._labelButtons = this._labels.map(function (label, i) {
        var btn = h('button', {
          type: 'button', class: 'crowd-label-choice', 'aria-pressed': 'false', style: { '--crowd-color': color(i) },
          onclick: function () { self._setCurrent(i); }
        }, h('span', { class: 'crowd-swatch', 'aria-hidden': 'true' }),
          i < 9 ? h('kbd', { 'aria-hidden': 'true', text: String(i + 1) }) : null, h('span', { text: label }));
        btn.setAttribute(INTERNAL, '');
        self._labelBar.append(btn);
        return btn;
      });
      this._syncLabels();
    }

    _setCurrent(i) { this._current = i; this._syncLabels(); }

    _syncLabels() {
      (this._labelButtons || []).forEach(function (b, i) { b.setAttribute('aria-pressed', String(i === this._current)); }, this);
    }

    _loadInitial() {
      var initial = attrJSON(this, 'initial-value', null);
      this._hasInitial = this.hasAttribute('initial-value');
      if (!Array.isArray(initial)) initial = [];
      this._boxes = initial.filter(function (b) { return b && typeof b === 'object'; }).map(function (b) {
        return { label: String(b.label === undefined ? '' : b.label), left: Number(b.left) || 0, top: Number(b.top) || 0,
                 width: Number(b.width) || 0, height: Number(b.height) || 0 };
      });
      this._initialJSON = JSON.stringify(this._rounded());
      this._selectedIndex = -1;
      this._snapshot = JSON.stringify(this._boxes);
      this._undone = [];
      this._redone = [];
      this._syncHistory();
    }

    _changed() {
      var now = JSON.stringify(this._boxes);
      if (now !== this._snapshot) {
        this._undone.push(this._snapshot);
        this._redone = [];
        this._snapshot = now;
      }
      this._syncHistory();
      super._changed();
    }

    /** Undo (from the undone steps, to the redone) or redo (the other way round). */
    _history(from, to, said) {
      if (!from.length || this._drag) return;
      to.push(JSON.stringify(this._boxes));
      this._boxes = JSON.parse(from.pop());
      this._snapshot = JSON.stringify(this._boxes);
      this._selectedIndex = -1;
      this._status.textContent = said;
      this._render();
      this._syncHistory();
      super._changed();
    }

    _syncHistory() {
      if (!this._undoButton) return;
      this._undoButton.disabled = !this._undone.length;
      this._redoButton.disabled = !this._redone.length;
    }

    /** Ctrl/Cmd+Z undoes, Ctrl/Cmd+Shift+Z and Ctrl/Cmd+Y redo; true when the key was one of them. */
    _undoKey(e) {
      if (!(e.ctrlKey || e.metaKey) || e.altKey) return false;
      var key = e.key.toLowerCase();
      if (key === 'z' && !e.shiftKey) this._history(this._undone, this._redone, 'Undone.');
      else if (key === 'z' || key === 'y') this._history(this._redone, this._undone, 'Redone.');
      else return false;
      return true;
    }

    _natural() { return { w: this._img.naturalWidth || 0, h: this._img.naturalHeight || 0 }; }

    /** Pointer position in the image's natural pixels (clamped to the image). */
    _toImage(e) {
      var rect = this._img.getBoundingClientRect();
      var n = this._natural();
      var x = (e.clientX - rect.left) * n.w / (rect.width || 1);
      var y = (e.clientY - rect.top) * n.h / (rect.height || 1);
      return { x: Math.min(Math.max(x, 0), n.w), y: Math.min(Math.max(y, 0), n.h), cx: e.clientX, cy: e.clientY };
    }

    _pointerDown(e) {
      if (e.button !== 0 || !this._loaded) return;
      var p = this._toImage(e);
      var handle = e.target.closest('.crowd-bbox-handle');
      var boxEl = e.target.closest('.crowd-bbox');
      this._stage.focus({ preventScroll: true });
      if (handle && boxEl) {
        var i = Number(boxEl.dataset.index), b = this._boxes[i], corner = handle.dataset.corner;
        // The corner opposite the handle stays put.
        var fx = corner.indexOf('w') >= 0 ? b.left + b.width : b.left;
        var fy = corner.indexOf('n') >= 0 ? b.top + b.height : b.top;
        this._drag = { mode: 'resize', index: i, fx: fx, fy: fy, start: p };
        this._select(i);
      } else if (boxEl) {
        var j = Number(boxEl.dataset.index), box = this._boxes[j];
        this._drag = { mode: 'move', index: j, start: p, left: box.left, top: box.top };
        this._select(j);
      } else {
        this._select(-1);
        this._drag = { mode: 'draw', start: p, draft: null };
      }
      this._drag.before = JSON.stringify(this._boxes);
      this._stage.setPointerCapture(e.pointerId);
      e.preventDefault();
    }

    _pointerMove(e) {
      var d = this._drag;
      if (!d) return;
      var p = this._toImage(e);
      var n = this._natural();
      if (d.mode === 'draw') {
        d.draft = { label: this._labels[this._current] || '', left: Math.min(d.start.x, p.x), top: Math.min(d.start.y, p.y),
                    width: Math.abs(p.x - d.start.x), height: Math.abs(p.y - d.start.y) };
        d.big = Math.abs(p.cx - d.start.cx) >= MIN_DRAG_CSS_PX && Math.abs(p.cy - d.start.cy) >= MIN_DRAG_CSS_PX;
      } else if (d.mode === 'move') {
        var b = this._boxes[d.index];
        b.left = Math.min(Math.max(d.left + p.x - d.start.x, 0), n.w - b.width);
        b.top = Math.min(Math.max(d.top + p.y - d.start.y, 0), n.h - b.height);
      } else if (d.mode === 'resize') {
        var r = this._boxes[d.index];
        r.left = Math.min(d.fx, p.x); r.top = Math.min(d.fy, p.y);
        r.width = Math.abs(p.x - d.fx); r.height = Math.abs(p.y - d.fy);
      }
      this._render(true);
    }

    _pointerUp(e, cancelled) {
      var d = this._drag;
      if (!d) return;
      this._drag = null;
      try { this._stage.releasePointerCapture(e.pointerId); } catch (err) { /* already released */ }
      if (cancelled) { this._boxes = JSON.parse(d.before); this._render(); return; }
      if (d.mode === 'draw') {
        if (d.draft && d.big && d.draft.width >= 1 && d.draft.height >= 1) {
          this._boxes.push(d.draft);
          this._selectedIndex = this._boxes.length - 1;
          this._status.textContent = 'Added a ' + (d.draft.label || 'box') + ' box.';
          this._changed();
        }
      } else if (d.mode === 'resize') {
        var r = this._boxes[d.index];
        if (r.width < 1 || r.height < 1) { this._boxes = JSON.parse(d.before); }
        else this._changed();
      } else if (JSON.stringify(this._boxes) !== d.before) {
        this._changed();
      }
      this._render();
    }

    _select(i) {
      this._selectedIndex = i;
      this._deleteButton.disabled = i < 0;
      this._render(true);
      this._syncList();
    }

    _deleteSelected() {
      var i = this._selectedIndex;
      if (i < 0 || i >= this._boxes.length) return;
      var removed = this._boxes.splice(i, 1)[0];
      this._selectedIndex = -1;
      this._status.textContent = 'Deleted the ' + (removed.label || '') + ' box.';
      this._render();
      this._changed();
    }

    /** The image's displayed size over its natural size (1: one screen pixel per image pixel). */
    _scale() {
      var n = this._natural();
      return n.w ? this._img.getBoundingClientRect().width / n.w : 1;
    }

    _zoomBy(factor) {
      if (!this._loaded) return;
      var fit = this._zoom === null;
      var next = Math.min(Math.max(this._scale() * factor, ZOOM_MIN), ZOOM_MAX);
      // zooming out past the size that fits the window goes back to fitting it
      if (factor < 1 && (fit || next <= this._fitScale())) { this._zoomTo(null); return; }
      this._zoomTo(next);
    }

    /** The scale at which the image fits the window (as shown with no zoom). */
    _fitScale() {
      var n = this._natural(), frame = this._frame;
      var style = getComputedStyle(frame);
      var room = frame.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      return Math.min(1, room / n.w, 0.8 * window.innerHeight / n.h);
    }

    /** Zoom to `scale` (null: fit the window), keeping the image point at the frame's centre there. */
    _zoomTo(scale) {
      var n = this._natural();
      if (!n.w || !n.h) return;
      var frame = this._frame, before = this._img.getBoundingClientRect(), box = frame.getBoundingClientRect();
      var cx = (box.left + box.width / 2 - before.left) / before.width;
      var cy = (Math.min(box.top + box.height / 2, window.innerHeight / 2) - before.top) / before.height;
      this._zoom = scale;
      var zoomed = scale !== null;
      this._img.style.width = zoomed ? (n.w * scale) + 'px' : '';
      this._img.style.maxWidth = this._img.style.maxHeight = this._stage.style.maxWidth = zoomed ? 'none' : '';
      frame.classList.toggle('crowd-zoomed', zoomed);
      var after = this._img.getBoundingClientRect(), now = frame.getBoundingClientRect();
      frame.scrollLeft += after.left + cx * after.width - (now.left + now.width / 2);
      frame.scrollTop += after.top + cy * after.height - (now.top + Math.min(now.height, window.innerHeight) / 2);
      this._showZoom();
    }

    _showZoom() { this._zoomLabel.textContent = Math.round(this._scale() * 100) + '%'; }

    _onKey(e) {
      if (this._undoKey(e)) return true;
      var n = Number(e.key);
      if (e.key.length === 1 && n >= 1 && n <= 9 && n <= this._labels.length) { this._setCurrent(n - 1); return true; }
      if (e.key === '+' || e.key === '=') { this._zoomBy(ZOOM_STEP); return true; }
      if (e.key === '-') { this._zoomBy(1 / ZOOM_STEP); return true; }
      if (e.key === '0') { this._zoomTo(null); return true; }
      if ((e.key === 'Delete' || e.key === 'Backspace') && this._selectedIndex >= 0) { this._deleteSelected(); return true; }
      if (e.key === 'Escape' && this._selectedIndex >= 0) { this._select(-1); return true; }
      var step = e.shiftKey ? 10 : 1;
      var moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (moves[e.key] && this._selectedIndex >= 0 && e.target === this._stage) {
        var b = this._boxes[this._selectedIndex], nat = this._natural();
        b.left = Math.min(Math.max(b.left + moves[e.key][0], 0), nat.w - b.width);
        b.top = Math.min(Math.max(b.top + moves[e.key][1], 0), nat.h - b.height);
        this._render();
        this._changed();
        return true;
      }
      return false;
    }

    _render(skipList) {
      var self = this;
      var n = this._natural();
      this._layer.textContent = '';
      if (!n.w || !n.h) return;
      var boxes = this._boxes.slice();
      if (this._drag && this._drag.mode === 'draw' && this._drag.draft) boxes.push(this._drag.draft);
      boxes.forEach(function (b, i) {
        var labelIndex = self._labels.indexOf(b.label);
        var selected = i === self._selectedIndex;
        var el = h('div', {
          class: 'crowd-bbox' + (selected ? ' crowd-selected' : '') + (i >= self._boxes.length ? ' crowd-draft' : ''),
          'data-index': String(i),
          style: {
            left: (b.left / n.w * 100) + '%', top: (b.top / n.h * 100) + '%',
            width: (b.width / n.w * 100) + '%', height: (b.height / n.h * 100) + '%',
            '--crowd-color': color(labelIndex < 0 ? 0 : labelIndex)
          }
        }, h('span', { class: 'crowd-bbox-tag', text: b.label }));
        if (selected) {
          ['nw', 'ne', 'sw', 'se'].forEach(function (c) {
            el.append(h('span', { class: 'crowd-bbox-handle crowd-handle-' + c, 'data-corner': c }));
          });
        }
        self._layer.append(el);
      });
      this._deleteButton.disabled = this._selectedIndex < 0;
      if (!skipList) this._renderList();
    }

    _renderList() {
      var self = this;
      this._list.textContent = '';
      this._boxes.forEach(function (b, i) {
        var r = self._round(b);
        var labelIndex = self._labels.indexOf(b.label);
        var select = h('select', { 'aria-label': 'Label of box ' + (i + 1),
          onchange: function () { b.label = select.value; self._render(); self._changed(); } });
        select.setAttribute(INTERNAL, '');
        var names = self._labels.slice();
        if (names.indexOf(b.label) < 0) names.push(b.label);
        names.forEach(function (name) {
          var opt = h('option', { value: name, text: name });
          if (name === b.label) opt.selected = true;
          select.append(opt);
        });
        var del = h('button', { type: 'button', class: 'crowd-link', text: 'Delete', 'aria-label': 'Delete box ' + (i + 1),
          onclick: function (e) { e.stopPropagation(); self._selectedIndex = i; self._deleteSelected(); } });
        del.setAttribute(INTERNAL, '');
        var item = h('li', { class: 'crowd-bbox-item', style: { '--crowd-color': color(labelIndex < 0 ? 0 : labelIndex) },
          onclick: function (e) { if (e.target === item || e.target.classList.contains('crowd-bbox-coords')) self._select(i); } },
          h('span', { class: 'crowd-swatch', 'aria-hidden': 'true' }), select,
          h('span', { class: 'crowd-bbox-coords', text: 'left ' + r.left + ', top ' + r.top + ', ' + r.width + '\u00d7' + r.height + ' px' }),
          del);
        self._list.append(item);
      });
      this._syncList();
    }

    _syncList() {
      var items = this._list.children;
      for (var i = 0; i < items.length; i++) {
        if (i === this._selectedIndex) items[i].setAttribute('aria-current', 'true');
        else items[i].removeAttribute('aria-current');
      }
    }

    _round(b) {
      return { label: b.label, left: Math.round(b.left), top: Math.round(b.top), width: Math.round(b.width), height: Math.round(b.height) };
    }
    _rounded() { return this._boxes.map(this._round); }

    _focusTarget() { return this._stage; }

    _crowdAnswer() {
      var n = this._natural();
      var out = { boundingBoxes: this._rounded(), inputImageProperties: { height: n.h, width: n.w } };
      if (this._hasInitial) out.initialValueModified = JSON.stringify(out.boundingBoxes) !== this._initialJSON;
      return out;
    }
    get value() { return this._crowdAnswer(); }
    get _submittableValue() { return this._crowdAnswer(); }

    _crowdValidate() {
      if (this._failed) return 'The image could not be loaded; this task cannot be answered.';
      if (!this._loaded) return 'The image has not finished loading.';
      return '';
    }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-entity-annotation: internal offsets are UTF-16 code units; the answer uses code points.

  function codePoints(text, cu) { return Array.from(text.slice(0, cu)).length; }

  function isHigh(c) { return c >= 0xD800 && c <= 0xDBFF; }
  function isLow(c) { return c >= 0xDC00 && c <= 0xDFFF; }

  class CrowdEntityAnnotation extends CrowdElement {
    static get observedAttributes() { return ['text', 'labels', 'header', 'initial-value']; }

    _build() {
      var self = this;
      var parts = this._layout();
      this._header = parts.header;
      this._current = -1;
      this._entities = [];
      this._labelBar = h('div', { class: 'crowd-label-bar', role: 'group', 'aria-label': 'Entity type' });
      this._textEl = h('div', { class: 'crowd-entity-text', tabindex: '0', 'aria-label': 'Text to annotate' });
      this._textEl.setAttribute(INTERNAL, '');
      this._status = h('p', { class: 'crowd-status', 'aria-live': 'polite' });
      this._list = h('ul', { class: 'crowd-entity-list', 'aria-label': 'Entities' });
      parts.main.append(this._labelBar,
        h('p', { class: 'crowd-hint', text: 'Choose an entity type (keys 1\u20139), then select its words in the text; or select first and then choose the type. \u00d7 removes an entity.' }),
        this._textEl, this._status, this._list);
      if (parts.extra) parts.main.append(parts.extra);

      // Remember the selection before a label button's mousedown can clear it.
      this._labelBar.addEventListener('pointerdown', function () { self._pending = self._selectionOffsets(); }, true);
      this._textEl.addEventListener('pointerdown', function (e) { if (e.button === 0) self._selecting = true; });
      this._onDocPointerUp = function () {
        if (!self._selecting) return;
        self._selecting = false;
        setTimeout(function () { self._selectionDone(); }, 0);
      };
      document.addEventListener('pointerup', this._onDocPointerUp);
      this._textEl.addEventListener('keyup', function (e) { if (e.shiftKey || e.key === 'Shift') self._selectionDone(); });

      this._renderLabels();
      this._loadText();
    }

    _attributeChanged(name) {
      if (name === 'header') this._setHeader();
      else if (name === 'labels') { this._renderLabels(); this._renderText(); }
      else this._loadText();
    }

    _renderLabels() {
      var self = this;
      var raw = attrJSON(this, 'labels', []);
      this._labels = (Array.isArray(raw) ? raw : []).map(function (item) {
        if (item !== null && typeof item === 'object') {
          var label = String(item.label);
          var full = item.fullDisplayName ? String(item.fullDisplayName) : label;
          return { label: label, short: item.shortDisplayName ? String(item.shortDisplayName) : full, full: full };
        }
        return { label: String(item), short: String(item), full: String(item) };
      });
      if (this._current >= this._labels.length) this._current = -1;
      this._labelBar.textContent = '';
      this._labelButtons = this._labels.map(function (l, i) {
        var btn = h('button', {
          type: 'button', class: 'crowd-label-choice', 'aria-pressed': 'false', style: { '--crowd-color': color(i) },
          title: l.full, onclick: function (e) { self._pick(i, e.detail > 0 ? self._pending : null); self._pending = null; }
        }, h('span', { class: 'crowd-swatch', 'aria-hidden': 'true' }),
          i < 9 ? h('kbd', { 'aria-hidden': 'true', text: String(i + 1) }) : null,
          h('span', { text: l.full }),
          l.short !== l.full ? h('span', { class: 'crowd-label-short', text: l.short }) : null);
        btn.setAttribute(INTERNAL, '');
        self._labelBar.append(btn);
        return btn;
      });
      this._syncLabels();
    }

    _syncLabels() {
      (this._labelButtons || []).forEach(function (b, i) { b.setAttribute('aria-pressed', String(i === this._current)); }, this);
    }

    _loadText() {
      this._text = this.getAttribute('text') || '';
      var map = [0], cu = 0;
      for (var ch of this._text) { cu += ch.length; map.push(cu); }
      this._cpToCu = map;
      var initial = attrJSON(this, 'initial-value', []);
      var self = this;
      this._entities = (Array.isArray(initial) ? initial : []).filter(function (e) { return e && typeof e === 'object'; })
        .map(function (e) {
          var s = map[Math.min(Math.max(Number(e.startOffset) || 0, 0), map.length - 1)];
          var t = map[Math.min(Math.max(Number(e.endOffset) || 0, 0), map.length - 1)];
          return { label: String(e.label), start: s, end: t };
        }).filter(function (e) { return e.end > e.start; });
      this._entities.sort(function (a, b) { return a.start - b.start; });
      self._renderText();
    }

    /** Pick label i: apply it to a pending selection if there is one, else make it the current
     *  label (picking the current label again clears it). */
    _pick(i, pending) {
      var offsets = pending || this._selectionOffsets();
      if (offsets) {
        this._current = i;
        this._syncLabels();
        this._add(offsets.start, offsets.end, this._labels[i].label);
        return;
      }
      this._current = this._current === i ? -1 : i;
      this._syncLabels();
      this._status.textContent = this._current >= 0
        ? 'Now select the words labeled ' + this._labels[i].full + ' in the text.' : '';
    }

    _selectionDone() {
      var offsets = this._selectionOffsets();
      if (!offsets) return;
      if (this._current >= 0) {
        this._add(offsets.start, offsets.end, this._labels[this._current].label);
      } else {
        this._status.textContent = 'Choose the entity type for \u201c' + this._text.slice(offsets.start, offsets.end) + '\u201d.';
      }
    }

    /** The selection inside the text as UTF-16 offsets {start, end}, trimmed of whitespace. */
    _selectionOffsets() {
      var sel = window.getSelection();
      if (!sel || !sel.rangeCount || sel.isCollapsed) return null;
      var range = sel.getRangeAt(0);
      if (!range.intersectsNode(this._textEl)) return null;
      var start = this._boundary(range.startContainer, range.startOffset);
      var end = this._boundary(range.endContainer, range.endOffset);
      var text = this._text;
      while (start < end && /\s/.test(text[start])) start++;
      while (end > start && /\s/.test(text[end - 1])) end--;
      // Never split a surrogate pair (an emoji is one character).
      if (start > 0 && isLow(text.charCodeAt(start)) && isHigh(text.charCodeAt(start - 1))) start--;
      if (end < text.length && isLow(text.charCodeAt(end)) && isHigh(text.charCodeAt(end - 1))) end++;
      return end > start ? { start: start, end: end } : null;
    }

    /** A DOM boundary point → UTF-16 offset in the text (only the text's own nodes count). */
    _boundary(node, offset) {
      if (this._segStart.has(node)) return this._segStart.get(node) + Math.min(offset, node.length);
      var point = document.createRange();
      try { point.setStart(node, offset); } catch (e) { return 0; }
      for (var i = 0; i < this._segments.length; i++) {
        if (point.comparePoint(this._segments[i][0], 0) >= 0) return this._segments[i][1];
      }
      return this._text.length;
    }

    _add(start, end, label) {
      // A new entity replaces any it overlaps.
      this._entities = this._entities.filter(function (e) { return e.end <= start || e.start >= end; });
      this._entities.push({ label: label, start: start, end: end });
      this._entities.sort(function (a, b) { return a.start - b.start; });
      var sel = window.getSelection();
      if (sel) sel.removeAllRanges();
      this._renderText();
      this._status.textContent = 'Labeled \u201c' + this._text.slice(start, end) + '\u201d as ' + label + '.';
      this._changed();
    }

    _remove(entity) {
      this._entities = this._entities.filter(function (e) { return e !== entity; });
      this._renderText();
      this._status.textContent = 'Removed \u201c' + this._text.slice(entity.start, entity.end) + '\u201d.';
      this._changed();
    }

    _labelInfo(label) {
      for (var i = 0; i < this._labels.length; i++) if (this._labels[i].label === label) return { index: i, l: this._labels[i] };
      return { index: -1, l: { label: label, short: label, full: label } };
    }

    _renderText() {
      var self = this, text = this._text;
      this._segStart = new Map();
      this._segments = [];
      this._textEl.textContent = '';
      this._list.textContent = '';
      function segment(parent, from, to) {
        if (to <= from) return;
        var node = document.createTextNode(text.slice(from, to));
        self._segStart.set(node, from);
        self._segments.push([node, from]);
        parent.append(node);
      }
      var cursor = 0;
      this._entities.forEach(function (entity) {
        segment(self._textEl, cursor, entity.start);
        var info = self._labelInfo(entity.label);
        var words = text.slice(entity.start, entity.end);
        var inner = h('span', { class: 'crowd-entity-words' });
        segment(inner, entity.start, entity.end);
        var remove = function () { self._remove(entity); };
        var mark = h('mark', { class: 'crowd-entity', 'data-label': entity.label, style: { '--crowd-color': color(info.index < 0 ? 0 : info.index) } },
          inner,
          h('span', { class: 'crowd-entity-tag', title: info.l.full, text: info.l.short }),
          h('button', { type: 'button', class: 'crowd-entity-remove', 'aria-label': 'Remove ' + info.l.full + ' \u201c' + words + '\u201d',
            text: '\u00d7', onclick: remove }));
        self._textEl.append(mark);
        self._list.append(h('li', { class: 'crowd-entity-item', style: { '--crowd-color': color(info.index < 0 ? 0 : info.index) } },
          h('span', { class: 'crowd-swatch', 'aria-hidden': 'true' }),
          h('span', { class: 'crowd-entity-item-label', text: info.l.full }),
          h('span', { class: 'crowd-entity-item-text', text: words }),
          h('button', { type: 'button', class: 'crowd-link', text: 'Remove', onclick: remove })));
        cursor = entity.end;
      });
      segment(this._textEl, cursor, text.length);
    }

    _onKey(e) {
      var n = Number(e.key);
      if (e.key.length === 1 && n >= 1 && n <= 9 && n <= this._labels.length) { this._pick(n - 1, null); return true; }
      return false;
    }

    _focusTarget() { return this._textEl; }

    _crowdAnswer() {
      var text = this._text || '';
      return { entities: (this._entities || []).map(function (e) {
        return { label: e.label, startOffset: codePoints(text, e.start), endOffset: codePoints(text, e.end) };
      }) };
    }
    get value() { return this._crowdAnswer(); }
    _crowdValidate() { return ''; }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-input, crowd-text-area

  var INPUT_TYPES = ['text', 'email', 'number', 'tel', 'url', 'password', 'search', 'date', 'time',
                     'datetime-local', 'month', 'week', 'color'];

  class CrowdField extends CrowdElement {
    static get observedAttributes() { return ['disabled', 'label', 'placeholder']; }
    _control() { return null; }
    _build() {
      var self = this;
      var control = this._control();
      control.setAttribute(INTERNAL, '');
      var id = nextId('field');
      control.id = id;
      var initial = this._initialValue !== undefined ? this._initialValue : (this.getAttribute('value') || '');
      control.value = initial;
      if (this.hasAttribute('placeholder')) control.placeholder = this.getAttribute('placeholder');
      if (this.hasAttribute('max-length')) control.maxLength = Number(this.getAttribute('max-length'));
      if (this.hasAttribute('min-length')) control.minLength = Number(this.getAttribute('min-length'));
      control.disabled = this.hasAttribute('disabled');
      control.required = this.hasAttribute('required');
      this._labelEl = h('label', { class: 'crowd-field-label', for: id, text: this.getAttribute('label') || '' });
      this._labelEl.hidden = !this.getAttribute('label');
      if (!this.getAttribute('label') && this.getAttribute('name')) control.setAttribute('aria-label', this.getAttribute('name'));
      this._error = h('div', { class: 'crowd-field-error', id: id + '-error', 'aria-live': 'polite' });
      control.setAttribute('aria-describedby', id + '-error');
      this._input = control;
      var extra = [];
      if (this.hasAttribute('char-counter')) {
        this._counter = h('div', { class: 'crowd-char-counter', 'aria-hidden': 'true' });
        extra.push(this._counter);
      }
      this.append(h('div', { class: 'crowd-field' }, this._labelEl, control, extra, this._error));
      var pattern = this._allowedPattern();
      control.addEventListener('beforeinput', function (e) {
        if (pattern && typeof e.data === 'string' && Array.from(e.data).some(function (c) { return !pattern.test(c); })) e.preventDefault();
      });
      control.addEventListener('input', function () {
        self._sync();
        self.classList.remove('crowd-invalid');
        self._error.textContent = '';
        if (self.hasAttribute('auto-validate')) self._error.textContent = self._crowdValidate();
        self.dispatchEvent(new Event('input', { bubbles: true }));
      });
      control.addEventListener('change', function () { self.dispatchEvent(new Event('change', { bubbles: true })); });
      this._sync();
      if (this.hasAttribute('auto-focus')) setTimeout(function () { control.focus(); }, 0);
    }
    _allowedPattern() {
      var p = this.getAttribute('allowed-pattern');
      if (!p) return null;
      try { return new RegExp(p); } catch (e) { return null; }
    }
    _sync() {
      if (this._counter) {
        var max = this.getAttribute('max-length');
        this._counter.textContent = this._input.value.length + (max ? ' / ' + max : '');
      }
    }
    _attributeChanged(name) {
      if (!this._input) return;
      if (name === 'disabled') this._input.disabled = this.hasAttribute('disabled');
      else if (name === 'placeholder') this._input.placeholder = this.getAttribute('placeholder') || '';
      else if (name === 'label') { this._labelEl.textContent = this.getAttribute('label') || ''; this._labelEl.hidden = !this.getAttribute('label'); }
    }
    get value() { return this._input ? this._input.value : (this._initialValue !== undefined ? this._initialValue : (this.getAttribute('value') || '')); }
    set value(v) { if (this._input) { this._input.value = v; this._sync(); } else this._initialValue = String(v); }
    focus(opts) { if (this._input) this._input.focus(opts); }
    _focusTarget() { return this._input; }
    _crowdAnswer() { return this.value; }
    _crowdValidate() {
      if (!this._input || this._input.disabled) return '';
      var name = this.getAttribute('label') || this.getAttribute('name') || 'This field';
      var custom = this.getAttribute('error-message');
      var value = this._input.value;
      var message = '';
      if (this.hasAttribute('required') && !value.trim()) message = name + ' is required.';
      else if (!this._input.checkValidity()) message = custom || (name + ': ' + this._input.validationMessage);
      else {
        var pattern = this._allowedPattern();
        if (pattern && Array.from(value).some(function (c) { return !pattern.test(c); })) message = custom || (name + ' contains characters that are not allowed.');
      }
      if (this._error) this._error.textContent = message;
      if (this._input) this._input.setAttribute('aria-invalid', message ? 'true' : 'false');
      return message;
    }
  }

  class CrowdInput extends CrowdField {
    _control() {
      var type = (this.getAttribute('type') || 'text').toLowerCase();
      return h('input', { class: 'crowd-input-control', type: INPUT_TYPES.indexOf(type) >= 0 ? type : 'text' });
    }
  }

  class CrowdTextArea extends CrowdField {
    _control() {
      var self = this;
      var rows = Number(this.getAttribute('rows')) || 3;
      var ta = h('textarea', { class: 'crowd-textarea-control', rows: String(rows) });
      var maxRows = Number(this.getAttribute('max-rows')) || 0;
      ta.addEventListener('input', function () { self._grow(rows, maxRows); });
      return ta;
    }
    _grow(rows, maxRows) {
      if (!maxRows) return;
      var ta = this._input;
      var lines = ta.value.split('\n').length;
      ta.rows = Math.min(Math.max(rows, lines), maxRows);
    }
  }

  // --------------------------------------------------------------------------------------------
  // crowd-checkbox, crowd-radio-group, crowd-radio-button

  class CrowdToggle extends CrowdElement {
    static get observedAttributes() { return ['disabled']; }
    _type() { return 'checkbox'; }
    _groupName() { return undefined; }
    _build() {
      var self = this;
      var input = h('input', { type: this._type(), class: 'crowd-toggle-control' });
      input.setAttribute(INTERNAL, '');
      var groupName = this._groupName();
      if (groupName) input.name = groupName;
      input.checked = this._initialChecked !== undefined ? this._initialChecked : this.hasAttribute('checked');
      input.disabled = this.hasAttribute('disabled');
      input.value = this.getAttribute('value') || 'on';
      var text = h('span', { class: 'crowd-toggle-label' });
      while (this.firstChild) text.append(this.firstChild);
      if (!text.textContent.trim() && !text.children.length) input.setAttribute('aria-label', this.getAttribute('value') || this.getAttribute('name') || this._type());
      this.append(h('label', { class: 'crowd-toggle' }, input, text));
      this._input = input;
      input.addEventListener('change', function () {
        self.classList.remove('crowd-invalid');
        var group = self.closest('crowd-radio-group');
        if (group) group.classList.remove('crowd-invalid');
        self.dispatchEvent(new Event('change', { bubbles: true }));
      });
    }
    _attributeChanged() { if (this._input) this._input.disabled = this.hasAttribute('disabled'); }
    get checked() { return this._input ? this._input.checked : (this._initialChecked !== undefined ? this._initialChecked : this.hasAttribute('checked')); }
    set checked(v) { if (this._input) this._input.checked = !!v; else this._initialChecked = !!v; }
    get value() { return this.getAttribute('value') || 'on'; }
    focus(opts) { if (this._input) this._input.focus(opts); }
    _focusTarget() { return this._input; }
    _crowdAnswer() { var out = {}; out[this.value] = this.checked; return out; }
    get _crowdMerge() { return true; }
  }

  class CrowdCheckbox extends CrowdToggle {
    _crowdValidate() {
      if (this.hasAttribute('required') && !this.hasAttribute('disabled') && !this.checked) {
        var text = this.textContent.trim() || this.value;
        return 'Check \u201c' + text + '\u201d.';
      }
      return '';
    }
  }

  var radioGroups = new WeakMap();
  class CrowdRadioButton extends CrowdToggle {
    _type() { return 'radio'; }
    _groupName() {
      var group = this.closest('crowd-radio-group');
      if (group) {
        if (!radioGroups.has(group)) radioGroups.set(group, nextId('radio-group'));
        return radioGroups.get(group);
      }
      return 'crowd-radio:' + (this.getAttribute('name') || '');
    }
    _crowdValidate() { return ''; }
  }

  class CrowdRadioGroup extends CrowdElement {
    _build() {
      this.setAttribute('role', 'radiogroup');
    }
    _crowdValidate() {
      if (!this.hasAttribute('required')) return '';
      var any = Array.prototype.some.call(this.querySelectorAll('crowd-radio-button'), function (b) { return b.checked; });
      return any ? '' : 'Choose one option' + (this.getAttribute('aria-label') ? ': ' + this.getAttribute('aria-label') : '.');
    }
    _focusTarget() { var b = this.querySelector('crowd-radio-button'); return b && b._focusTarget ? b._focusTarget() : this; }
  }

  // --------------------------------------------------------------------------------------------
  // Ground Truth elements gtrun does not implement: say so, and refuse to submit a wrong answer.

  function unsupported(tag) {
    return class extends CrowdElement {
      _build() {
        this.prepend(h('div', { class: 'crowd-element-error', role: 'alert',
          text: '<' + tag + '> is not supported by gtrun\u2019s local labeling service.' }));
      }
      _crowdValidate() { return '<' + tag + '> is not supported by gtrun\u2019s local labeling service.'; }
    };
  }

  // --------------------------------------------------------------------------------------------
  // Global keys: Ctrl/Cmd+Enter submits; 1–9 (and 0, Delete, Escape, arrows, +, -, Ctrl/Cmd+Z and Y) go to the annotation
  // element that holds the focus, else to the first one on the page.

  var KEY_ELEMENTS = 'crowd-classifier, crowd-classifier-multi-select, crowd-image-classifier, ' +
    'crowd-image-classifier-multi-select, crowd-bounding-box, crowd-entity-annotation';

  document.addEventListener('keydown', function (e) {
    if (e.defaultPrevented || e.isComposing) return;
    var active = document.activeElement;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      var form = (active && active.closest && active.closest('crowd-form')) || document.querySelector('crowd-form');
      if (form && typeof form.submit === 'function') { e.preventDefault(); form.submit(); }
      return;
    }
    if (isTypingTarget(e.target)) return;
    var target = (active && active.closest && active.closest(KEY_ELEMENTS)) || document.querySelector(KEY_ELEMENTS);
    if ((e.ctrlKey || e.metaKey) && !e.altKey && /^[zy]$/i.test(e.key)) {  // undo / redo, where an element has them
      if (target && target._crowdBuilt && typeof target._undoKey === 'function' && target._undoKey(e)) e.preventDefault();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (target && target._crowdBuilt && typeof target._onKey === 'function' && target._onKey(e)) e.preventDefault();
  });

  // --------------------------------------------------------------------------------------------
  // gtrun's task page left without an answer gives its task back (see the header comment). Only
  // pagehide: it fires on close, navigation and reload, and keeps the back/forward cache working;
  // a page brought back from that cache after its task was given back loads again.

  (function releaseOnLeave() {
    var task = window.gtrunTask;
    if (!task || typeof task !== 'object' || !task.releaseUrl || !task.token) return;
    if (typeof navigator.sendBeacon !== 'function') return;
    var sent = false;
    document.addEventListener('submit', function (e) {
      if (e.target && e.target.id === 'gtrun-release') pageSettled = true; // Release task: the form does it
    });
    window.addEventListener('pagehide', function () {
      if (pageSettled || sent) return;
      var body = new URLSearchParams();
      body.set('token', String(task.token));
      body.set('view', String(task.view || ''));
      try { sent = navigator.sendBeacon(task.releaseUrl, body); } catch (e) { sent = false; }
    });
    window.addEventListener('pageshow', function (e) {
      if (e.persisted && sent) window.location.reload();
    });
  })();

  // --------------------------------------------------------------------------------------------
  // The stylesheet next to this script, unless the page already links one.

  (function addStylesheet() {
    var script = document.currentScript;
    if (!script || !script.src) return;
    if (document.querySelector('link[rel="stylesheet"][href*="worker.css"], link[data-gtrun-worker-css]')) return;
    var link = h('link', { rel: 'stylesheet', href: new URL('worker.css', script.src).href, 'data-gtrun-worker-css': true });
    (document.head || document.documentElement).append(link);
  })();

  // --------------------------------------------------------------------------------------------
  // Registration (each guarded, so a second copy of the script cannot throw).

  var elements = {
    'crowd-form': CrowdForm,
    'crowd-button': CrowdButton,
    'crowd-alert': CrowdAlert,
    'crowd-instructions': CrowdInstructions,
    'crowd-classifier': CrowdClassifier,
    'crowd-image-classifier': CrowdImageClassifier,
    'crowd-classifier-multi-select': CrowdClassifierMulti,
    'crowd-image-classifier-multi-select': CrowdImageClassifierMulti,
    'crowd-bounding-box': CrowdBoundingBox,
    'crowd-entity-annotation': CrowdEntityAnnotation,
    'crowd-input': CrowdInput,
    'crowd-text-area': CrowdTextArea,
    'crowd-checkbox': CrowdCheckbox,
    'crowd-radio-group': CrowdRadioGroup,
    'crowd-radio-button': CrowdRadioButton
  };
  ['crowd-polygon', 'crowd-keypoint', 'crowd-line', 'crowd-semantic-segmentation',
   'crowd-instance-segmentation', 'crowd-video-classifier'].forEach(function (tag) { elements[tag] = unsupported(tag); });

  window.crowdHtmlElements = {
    gtrun: true,
    version: VERSION,
    collectAnswer: collectAnswer,
    validate: function (form) { return validate(form).map(function (p) { return p.message; }); },
    parseLoose: parseLoose
  };

  Object.keys(elements).forEach(function (tag) {
    if (!customElements.get(tag)) customElements.define(tag, elements[tag]);
  });
})();
