// Web Push (docs/push.md): when the user allows notifications, register the service
// worker (/sw.js) and a push subscription for this device, and give it to the server.

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/** Subscribe this device; resolves to what happened, in words for the user. */
export async function enablePush(session) {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    return "This browser cannot show notifications.";
  }
  const config = await fetch("/v1/push/config").then((r) => (r.ok ? r.json() : null));
  if (!config || !config.providers.includes("webpush")) {
    return "This server does not send web notifications.";
  }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") return "Notifications are blocked for this site.";
  const registration = await navigator.serviceWorker.register("/sw.js");
  await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(config.vapid_public_key),
    });
  }
  const response = await fetch("/v1/me/push", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: `Bearer ${await session.accessToken()}`,
    },
    body: JSON.stringify({ provider: "webpush", subscription: subscription.toJSON() }),
  });
  return response.ok ? "Notifications are on." : "The server refused the subscription.";
}

/** Subscribe again quietly if the user already allowed it (a new login, a new key). */
export async function renewPush(session) {
  if ("Notification" in window && Notification.permission === "granted") {
    await enablePush(session).catch(() => {});
  }
}
