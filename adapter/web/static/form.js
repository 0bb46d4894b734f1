// The hosted contact form: submit with fetch, show each server error next to its field.
// Without JavaScript the same form posts normally and the server answers with a page.
(() => {
  "use strict";
  const form = document.getElementById("contact-form");
  if (!form || !window.fetch || !window.FormData || !window.URLSearchParams) {
    return;
  }
  const status = document.getElementById("form-status");
  const result = document.getElementById("form-result");
  const button = form.querySelector('button[type="submit"]');
  const inputs = Array.from(form.querySelectorAll("input[data-field]"));

  const setDescribedBy = (input, id, on) => {
    const ids = (input.getAttribute("aria-describedby") || "")
      .split(/\s+/)
      .filter((each) => each && each !== id);
    if (on) {
      ids.push(id);
    }
    if (ids.length) {
      input.setAttribute("aria-describedby", ids.join(" "));
    } else {
      input.removeAttribute("aria-describedby");
    }
  };

  // The server's messages either name the value ("'+1 555' is not a valid phone number")
  // or complete a sentence about the field ("is required").
  const fieldMessage = (input, message) =>
    /^is\b/.test(message) ? `${input.dataset.label} ${message}` : message;

  const setError = (input, message) => {
    const element = document.getElementById(`${input.id}-error`);
    element.textContent = message ? fieldMessage(input, message) : "";
    if (message) {
      input.setAttribute("aria-invalid", "true");
    } else {
      input.removeAttribute("aria-invalid");
    }
    setDescribedBy(input, element.id, Boolean(message));
  };

  // A corrected field loses its error (and red border) as soon as it is typed in.
  for (const input of inputs) {
    input.addEventListener("input", () => {
      if (input.getAttribute("aria-invalid") === "true") {
        setError(input, "");
        if (!inputs.some((each) => each.getAttribute("aria-invalid") === "true")) {
          problem("");
        }
      }
    });
  }

  const problem = (text) => {
    status.textContent = text;
    status.className = text ? "status problem" : "status";
  };

  const showResult = (kind, data) => {
    document.getElementById("result-message").textContent = result.dataset[kind];
    const reference = document.getElementById("result-reference");
    const shown = data.reference || (data.delivery_id || "").slice(0, 8).toUpperCase();
    if (shown) {
      const strong = document.createElement("strong");
      strong.textContent = shown;
      reference.replaceChildren("Your reference: ", strong);
      reference.hidden = false;
    }
    result.dataset.outcome = kind;
    for (const element of [form, status, document.getElementById("form-title"), document.getElementById("form-intro")]) {
      element.hidden = true;
    }
    result.hidden = false;
    const title = document.getElementById("result-title");
    title.focus();
  };

  const showErrors = (errors) => {
    let first = null;
    let count = 0;
    const unplaced = [];
    for (const input of inputs) {
      const message = errors[input.dataset.field] || "";
      setError(input, message);
      if (message) {
        count += 1;
        first = first || input;
      }
    }
    for (const [key, message] of Object.entries(errors)) {
      if (!inputs.some((input) => input.dataset.field === key)) {
        unplaced.push(`${key} ${message}`);
      }
    }
    const summary =
      count === 1 ? "Please correct the field marked below." : `Please correct the ${count} fields marked below.`;
    problem([count ? summary : "", ...unplaced].filter(Boolean).join(" "));
    if (first) {
      first.focus();
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) {
      return;
    }
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    problem("");
    try {
      let response;
      try {
        response = await fetch(form.action, {
          method: "POST",
          headers: { Accept: "application/json" },
          body: new URLSearchParams(new FormData(form)),
          credentials: "same-origin",
        });
      } catch (_error) {
        problem("Could not reach the server. Check your connection and try again.");
        return;
      }
      let data = {};
      try {
        data = await response.json();
      } catch (_error) {
        data = {};
      }
      if (data.errors && Object.keys(data.errors).length) {
        showErrors(data.errors);
        return;
      }
      for (const input of inputs) {
        setError(input, "");
      }
      if (response.ok && data.redirect) {
        window.location.assign(data.redirect);
        return;
      }
      if (response.ok && data.status === "delivered") {
        showResult("registered", data);
      } else if (response.ok) {
        showResult("queued", data);
      } else if (data.status === "failed") {
        showResult("failed", data);
      } else {
        problem(data.error || `Something went wrong (HTTP ${response.status}). Please try again.`);
      }
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
})();
