// Parley's service worker: shows a push (docs/push.md) as one notification per chat,
// replacing the previous one (tag = chat id), and opens the app when it is clicked.

function text(data) {
  if (data.preview) return data.preview;
  if (data.type === "test") return "A test notification";
  return data.count === "1" ? "1 new message" : `${data.count} new messages`;
}

self.addEventListener("push", (event) => {
  const data = event.data ? event.data.json() : {};
  event.waitUntil(
    self.registration.showNotification(data.sender || "Parley", {
      body: text(data),
      tag: data.chat_id || "parley",
      renotify: true,
      icon: "/web/icon.svg",
      data,
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      if (windows.length) return windows[0].focus();
      return self.clients.openWindow("/");
    }),
  );
});
