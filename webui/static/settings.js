// Settings: follow a list download ("update now") while it runs; the page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("list-progress");
  if (!box || box.dataset.state !== "running") { return; }
  const poll = async () => {
    try {
      const resp = await fetch(box.dataset.poll, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) { return; }
      const job = await resp.json();
      box.textContent = job.progress.join("\n");
      if (job.state === "running") { setTimeout(poll, 1000); } else { location.reload(); }
    } catch (err) {
      setTimeout(poll, 3000);
    }
  };
  setTimeout(poll, 500);
});
