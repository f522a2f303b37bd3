// berth web UI: the one script. Copy buttons copy the field they name
// (data-copy="ID") and say so in the status beside them. Everything else
// works without JavaScript.
"use strict";

async function copyField(button) {
  const field = document.getElementById(button.dataset.copy);
  const status = button.nextElementSibling;
  if (!field) return;
  let copied = false;
  try {
    await navigator.clipboard.writeText(field.value);
    copied = true;
  } catch (_) {
    // Without the asynchronous clipboard (plain HTTP on another host, an
    // old browser), select the text and use the older command.
    field.select();
    copied = document.execCommand("copy");
  }
  if (status && status.getAttribute("role") === "status") {
    status.textContent = copied ? "Copied" : "Select the text and copy it";
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (button) copyField(button);
});

// Only a confirmed click deletes.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.classList.contains("delete-tag")) {
    const tag = form.closest("tr")?.dataset.tag;
    if (tag && !window.confirm(`Delete tag ${tag}?`)) event.preventDefault();
  }
});
