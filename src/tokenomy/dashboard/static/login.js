"use strict";
// The key stays in this tab's sessionStorage and is sent as `Authorization: Bearer` to the API.
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = document.getElementById("key").value.trim();
  const err = document.getElementById("login-error");
  err.textContent = "";
  try {
    const r = await fetch("/dashboard/api/whoami", {headers: {Authorization: "Bearer " + key}});
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      err.textContent = (body.error && body.error.message) || ("login failed: HTTP " + r.status);
      return;
    }
    sessionStorage.setItem("tokenomy_key", key);
    const next = new URLSearchParams(location.search).get("next");
    location.href = next && next.startsWith("/dashboard/") ? next : "/dashboard/overview";
  } catch (e) {
    err.textContent = "cannot reach the server: " + e;
  }
});
