// The portal's only script (served from /portal/assets, as the CSP allows no inline
// script): shows times in the reader's zone and copies a revealed secret. Every page
// works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!Number.isNaN(d.getTime())) {
      t.title = t.textContent;
      t.textContent = d.toLocaleString();
    }
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source || !navigator.clipboard) return;
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    });
  }
});
