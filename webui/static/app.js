// EdgeGuard UI: progressive enhancement only; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Commit-confirm countdown: <span data-deadline="unix seconds">.
  for (const el of document.querySelectorAll("[data-deadline]")) {
    const deadline = Number(el.dataset.deadline);
    const tick = () => {
      const left = Math.max(0, Math.round(deadline - Date.now() / 1000));
      el.textContent = left + " s";
      if (left > 0) { setTimeout(tick, 500); } else { setTimeout(() => location.reload(), 1500); }
    };
    tick();
  }
  // Buttons that ask first: <button data-confirm="Really?">.
  for (const el of document.querySelectorAll("[data-confirm]")) {
    el.addEventListener("click", (ev) => { if (!confirm(el.dataset.confirm)) { ev.preventDefault(); } });
  }
});
