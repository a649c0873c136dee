// Stepline dashboard: live updates over server-sent events. No framework, no build step.
// An element with data-live="URL" has its content replaced by each fragment the stream sends.
// The fragments are rendered (and escaped) by the server's templates.
"use strict";

function follow(element) {
  const source = new EventSource(element.dataset.live);
  const replace = (event) => {
    const open = new Set(
      Array.from(element.querySelectorAll("details[open] > summary")).map((s) => s.textContent)
    );
    element.innerHTML = event.data;
    // keep the steps a reader has opened open across updates
    element.querySelectorAll("details > summary").forEach((s) => {
      if (open.has(s.textContent)) s.parentElement.open = true;
    });
    element.dispatchEvent(new CustomEvent("stepline:updated"));
  };
  source.addEventListener("rows", replace);
  source.addEventListener("run", replace);
  source.addEventListener("end", () => {
    source.close();
    element.removeAttribute("data-live");
  });
  window.addEventListener("pagehide", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(follow);
  document.querySelectorAll("button.danger").forEach((button) => {
    button.addEventListener("click", (event) => {
      if (button.dataset.confirmed) return;
      if (!window.confirm(button.textContent.trim() + "?")) event.preventDefault();
    });
  });
});
