// Parley's web client: log in, then chat. Plain ES modules, no build step; it speaks
// only the documented protocol (docs/protocol.md) and HTTP APIs (docs/auth.md, docs/queries.md).

import { loadConfig, Session } from "./api.js";
import { clear } from "./dom.js";
import { loginView } from "./login.js";
import { enablePush, renewPush } from "./push.js";
import { Messenger } from "./messenger.js";
import { MainView } from "./views.js";

const root = document.getElementById("app");
const config = await loadConfig();

function showLogin(reason = "") {
  clear(root, loginView(start));
  if (reason) document.getElementById("auth-error").textContent = reason;
}

function start(session) {
  let view = null;
  const messenger = new Messenger(session, config, {
    onChange: () => view && view.render(),
    onNotice: (text) => view && view.notice(text),
    onLoggedOut: (reason) => {
      messenger.stop();
      session.forget();
      showLogin(`You were logged out (${reason}). Log in again.`);
    },
  });
  view = new MainView(messenger, {
    onLogout: async () => {
      messenger.stop();
      await session.logout();
      showLogin();
    },
    onNotifications: async () => view.notice(await enablePush(session)),
  });
  clear(root, view.root);
  window.parley = { messenger, view }; // for the browser test and for curious people
  messenger.start();
  view.render();
  renewPush(session);
}

const saved = Session.restore();
if (saved) start(saved);
else showLogin();
