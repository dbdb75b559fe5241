// The first screen: log in, or create an account and log in with it (docs/auth.md).

import { register, Session } from "./api.js";
import { h } from "./dom.js";

function randomPhone() {
  const digits = String(Math.floor(Math.random() * 1e7)).padStart(7, "0");
  return `+1555${digits}`;
}

export function loginView(onSession) {
  let mode = "login";
  const error = h("p", { class: "form-error", id: "auth-error", role: "alert" });
  const username = h("input", { id: "auth-username", name: "username", autocomplete: "username", required: true, placeholder: "ada" });
  const displayName = h("input", { id: "auth-display-name", name: "display_name", placeholder: "Ada Lovelace (optional)" });
  const phone = h("input", { id: "auth-phone", name: "phone", value: randomPhone(), placeholder: "+447700900123" });
  const password = h("input", { id: "auth-password", name: "password", type: "password", required: true, autocomplete: "current-password", placeholder: "at least 8 characters" });
  const submit = h("button", { id: "auth-submit", type: "submit", class: "primary" }, "Log in");
  const registerOnly = h(
    "div",
    { class: "register-only" },
    h("label", {}, "Display name", displayName),
    h("label", {}, "Phone", phone),
  );
  const tabs = {
    login: h("button", { type: "button", id: "tab-login", class: "tab", onclick: () => setMode("login") }, "Log in"),
    register: h("button", { type: "button", id: "tab-register", class: "tab", onclick: () => setMode("register") }, "Create account"),
  };

  function setMode(next) {
    mode = next;
    tabs.login.classList.toggle("selected", mode === "login");
    tabs.register.classList.toggle("selected", mode === "register");
    registerOnly.hidden = mode !== "register";
    submit.textContent = mode === "login" ? "Log in" : "Create account";
    error.textContent = "";
  }

  async function onSubmit(event) {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      if (mode === "register") {
        await register({
          username: username.value.trim(),
          phone: phone.value.trim(),
          displayName: displayName.value.trim(),
          password: password.value,
        });
      }
      onSession(await Session.login(username.value.trim(), password.value));
    } catch (failure) {
      const wait = failure.retryAfterS ? ` (try again in ${failure.retryAfterS} s)` : "";
      error.textContent = `${failure.message}${wait}`;
    } finally {
      submit.disabled = false;
    }
  }

  const form = h(
    "form",
    { class: "auth", id: "auth-form", onsubmit: onSubmit },
    h("div", { class: "brand" }, h("span", { class: "logo" }, "P"), h("h1", {}, "Parley")),
    h("div", { class: "tabs" }, tabs.login, tabs.register),
    h("label", {}, "Username", username),
    registerOnly,
    h("label", {}, "Password", password),
    error,
    submit,
  );
  setMode("login");
  return h("div", { class: "auth-page" }, form);
}
