() => {
  // sdui studio keys: Ctrl+Enter generates from any prompt box, Ctrl+Up/Down changes the emphasis of
  // the selected words (as A1111's edit-attention), Esc interrupts your own job; the prompt has focus
  // on load; status lines are aria-live regions.
  const visible = (el) => el && el.offsetParent !== null;
  const firstVisible = (ids) => ids.map((id) => document.getElementById(id)).find(visible);
  const PRECISION = 0.1, PRECISION_EXTRA = 0.05;
  const DELIMITERS = ".,\\/!?%^*;:{}=`~() \t\r\n";

  function update(target) {
    target.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function isPromptBox(el) {
    return el && el.tagName === "TEXTAREA" && el.closest(".sdui-prompt, #hires_prompt, #hires_neg_prompt, #upscale_prompt");
  }

  function editAttention(event, target) {
    const up = event.key === "ArrowUp";
    let start = target.selectionStart, end = target.selectionEnd, text = target.value;

    function selectBlock(open, close) {
      if (start !== end) return false;
      const before = text.substring(0, start), after = text.substring(start);
      const o = before.lastIndexOf(open), oc = before.lastIndexOf(close);
      if (o === -1 || (oc !== -1 && oc > o)) return false;
      const c = after.indexOf(close), co = after.indexOf(open);
      if (c === -1 || (co !== -1 && co < c)) return false;
      const inner = text.substring(o + 1, start + c);
      start = o + 1;
      end = /.*:-?[\d.]+$/s.test(inner) ? start + inner.lastIndexOf(":") : start + inner.length;
      return true;
    }
    function selectWord() {
      if (start !== end) return;
      while (start > 0 && !DELIMITERS.includes(text[start - 1])) start--;
      while (end < text.length && !DELIMITERS.includes(text[end])) end++;
      while (text[start] === " " && start < end) start++;
      while (text[end - 1] === " " && end > start) end--;
    }
    if (!selectBlock("<", ">") && !selectBlock("(", ")") && !selectBlock("[", "]")) selectWord();
    event.preventDefault();

    let closing = ")", delta = PRECISION;
    const before = start > 0 ? text[start - 1] : "", after = text[end];
    if (before === "<") {
      closing = ">"; delta = PRECISION_EXTRA;
    } else if ((before === "(" && after === ")") || (before === "[" && after === "]")) {
      let n = 0;  // old-style (((emphasis))) / [[less]] becomes (words:weight)
      while (text[start - n - 1] === before && text[end + n] === after) n++;
      let w = before === "[" ? (1 / 1.1) ** n : 1.1 ** n;
      w = Math.round(w / PRECISION) * PRECISION;
      text = text.slice(0, start - n) + "(" + text.slice(start, end) + ":" + w + ")" + text.slice(end + n);
      start -= n - 1; end -= n - 1;
    } else if (before !== "(") {
      while (end > start && text[end - 1] === " ") end--;
      if (start === end) return;
      text = text.slice(0, start) + "(" + text.slice(start, end) + ":1.0)" + text.slice(end);
      start++; end++;
    }
    if (text[end] !== ":") return;
    const len = text.slice(end + 1).indexOf(closing) + 1;
    let weight = parseFloat(text.slice(end + 1, end + len));
    if (isNaN(weight)) return;
    weight = parseFloat((weight + (up ? delta : -delta)).toPrecision(12));
    let shown = Number.isInteger(weight) ? weight + ".0" : String(weight);
    if (closing === ")" && weight === 1) {  // back to plain words
      const close = text.substring(end).indexOf(")");
      text = text.slice(0, start - 1) + text.slice(start, end) + text.slice(end + close + 1);
      start--; end--;
    } else {
      text = text.slice(0, end + 1) + shown + text.slice(end + len);
    }
    target.focus();
    target.value = text;
    target.selectionStart = start;
    target.selectionEnd = end;
    update(target);
  }

  document.addEventListener("keydown", (event) => {
    const target = event.composedPath()[0];
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter" && isPromptBox(target)) {
      const button = firstVisible(["txt2img_generate", "img2img_generate", "upscale_run"]);
      if (button && !button.disabled) {
        event.preventDefault();
        update(target);  // the box's newest text goes with the request
        setTimeout(() => button.click(), 50);
      }
      return;
    }
    if ((event.ctrlKey || event.metaKey) && (event.key === "ArrowUp" || event.key === "ArrowDown") && isPromptBox(target)) {
      editAttention(event, target);
      return;
    }
    if (event.key === "Escape" && !document.querySelector("[role=listbox] li, .modal, .preview[role=dialog]")) {
      const running = document.querySelector(".sdui-status .sdui-progress");
      const button = firstVisible(["txt2img_interrupt", "img2img_interrupt", "upscale_interrupt"]);
      if (running && visible(running) && button && !button.disabled) button.click();
    }
  });

  // img2img takes an uploaded picture's size (rounded down to 8, as it is made): Gradio's editor sends no
  // upload event for a chosen file, so the page measures the file itself and sets Width/Height.
  function setNumber(id, value) {
    const box = document.querySelector(`#${id} input[type=number]`);
    if (!box) return;
    box.value = value;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    box.dispatchEvent(new Event("change", { bubbles: true }));
    box.dispatchEvent(new Event("blur", { bubbles: true }));
  }
  document.addEventListener("change", async (event) => {
    const input = event.composedPath()[0];
    if (!input || input.type !== "file" || !input.closest("#img2img_editor") || !input.files || !input.files[0]) return;
    try {
      const bitmap = await createImageBitmap(input.files[0]);
      const round8 = (n) => Math.max(64, Math.floor(n / 8) * 8);  // down to the 8 px grid, as it is made
      setNumber("img2img_width", round8(bitmap.width));
      setNumber("img2img_height", round8(bitmap.height));
    } catch (e) { /* not an image: the server says so */ }
  }, true);

  // Phone: progress and the result sit above the prompt (studio.css); a Generate tapped further down
  // scrolls the page up to them, so the tap changes something on screen at once. No scroll anchoring
  // there: when the progress line and the result grow, the page keeps its place (they stay on screen)
  // instead of holding the prompt still and pushing them up out of sight. (Set here: Gradio scopes the
  // stylesheet's rules to its container, so CSS cannot reach the page's scroller.)
  const phone = window.matchMedia("(max-width: 768px)");
  const anchoring = () => { document.documentElement.style.overflowAnchor = phone.matches ? "none" : ""; };
  phone.addEventListener("change", anchoring);
  anchoring();
  document.addEventListener("click", (event) => {
    const target = event.composedPath()[0];
    const button = target && target.closest && target.closest("#txt2img_generate, #img2img_generate");
    if (!button || !phone.matches) return;
    const status = document.getElementById(button.id.replace("_generate", "_status"));
    const top = status ? status.getBoundingClientRect().top : 0;
    if (top < 0) window.scrollBy(0, top - 8);
  }, true);

  const ready = setInterval(() => {
    const box = document.querySelector("#txt2img_prompt textarea");
    if (!box) return;
    clearInterval(ready);
    document.querySelectorAll(".sdui-status, #download_status").forEach((el) => {
      el.setAttribute("aria-live", "polite");
      el.setAttribute("role", "status");
    });
    if (!document.activeElement || document.activeElement === document.body) box.focus();
  }, 100);
}
