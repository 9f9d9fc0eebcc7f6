// The one tag a company puts on its pages (docs/widget.md):
//   <script src="https://support.example.com/widget.js" data-site="<slug>" async></script>
// It adds a launcher button and, once opened, a panel holding an iframe served by the support site
// (/widget/<slug>/, static/widget/frame.js): the host page's CSS and scripts cannot reach into the chat, and the chat
// cannot read the host page. Options are `data-` attributes: color (#rrggbb), position (right | left), greeting,
// language, label, and a signed-in customer's customer-id, customer-name, customer-email, customer-timestamp and
// customer-signature (signed by the host site's server). A classic script, not a module: it runs on any page.
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || window.SupportWidget) return;
  const options = script.dataset;
  if (!options.site) {
    console.error("support widget: the script tag needs data-site=\"<your site's slug>\"");
    return;
  }
  const base = new URL(script.src, location.href).origin;
  const colour = /^#[0-9a-fA-F]{6}$/.test(options.color || "") ? options.color : "#2456c5";
  const side = options.position === "left" ? "left" : "right";
  const SMALL = window.matchMedia("(max-width: 480px)");
  const OPEN_KEY = `support-widget:${options.site}:open`;
  // The visitor token, kept in this origin's storage: the frame's own would be third-party storage, which browsers
  // that block third-party cookies block too. It only works from the support site's own pages (docs/widget.md).
  const TOKEN_KEY = `support-widget:${options.site}:visitor`;
  // The frame's messages (static/widget/frame.js MESSAGE).
  const READY = "support:ready";
  const INIT = "support:init";
  const CLOSE = "support:close";
  const OPEN = "support:open";
  const TOKEN = "support:token";

  const query = new URLSearchParams();
  if (options.language) query.set("lang", options.language);
  if (options.color) query.set("color", colour);
  if (options.greeting) query.set("greeting", options.greeting);
  const frameUrl = `${base}/widget/${encodeURIComponent(options.site)}/?${query}`;
  const identity = options.customerId
    ? {
        id: options.customerId,
        name: options.customerName || "",
        email: options.customerEmail || "",
        timestamp: options.customerTimestamp || "",
        signature: options.customerSignature || "",
      }
    : null;

  // A shadow root: the host page's stylesheets do not reach the launcher; styles are set property by
  // property (CSSOM), which a host page's strict Content-Security-Policy allows where a <style> would be blocked.
  const host = document.createElement("div");
  host.setAttribute("data-support-widget", options.site);
  const shadow = host.attachShadow({ mode: "open" });
  const launcher = document.createElement("button");
  launcher.type = "button";
  // A speech bubble drawn as SVG: an emoji would depend on the visitor's fonts.
  const icon = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("width", "28");
  icon.setAttribute("height", "28");
  icon.setAttribute("aria-hidden", "true");
  const bubble = document.createElementNS("http://www.w3.org/2000/svg", "path");
  bubble.setAttribute("d", "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z");
  bubble.setAttribute("fill", "currentColor");
  icon.append(bubble);
  launcher.append(icon);
  launcher.setAttribute("aria-label", options.label || "Chat with us");
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-haspopup", "dialog");
  Object.assign(launcher.style, {
    position: "fixed", bottom: "20px", [side]: "20px", width: "56px", height: "56px", borderRadius: "50%",
    border: "0", background: colour, color: "#fff", cursor: "pointer", alignItems: "center", justifyContent: "center",
    boxShadow: "0 4px 12px rgba(0,0,0,.25)", zIndex: "2147483000", padding: "0",
  });
  const panel = document.createElement("div");
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", options.label || "Chat with us");
  panel.hidden = true;
  let frame = null;
  let frameReady = false; // the frame said READY: messages to it reach our page, not about:blank

  function placePanel() {
    const small = SMALL.matches;
    Object.assign(panel.style, {
      position: "fixed", zIndex: "2147483001", background: "#fff", overflow: "hidden",
      display: panel.hidden ? "none" : "block",
      bottom: small ? "0" : "88px", [side]: small ? "0" : "20px", [side === "right" ? "left" : "right"]: small ? "0" : "auto",
      top: small ? "0" : "auto", width: small ? "100%" : "380px", height: small ? "100%" : "min(640px, calc(100vh - 110px))",
      borderRadius: small ? "0" : "12px", boxShadow: small ? "none" : "0 8px 30px rgba(0,0,0,.25)",
    });
    launcher.style.display = small && !panel.hidden ? "none" : "flex"; // full screen: the frame's ✕ closes
  }

  function kept(key) {
    try { return localStorage.getItem(key); } catch (err) { return null; }
  }

  function keep(key, value) {
    try { localStorage.setItem(key, value); } catch (err) { /* storage blocked: the chat lasts as long as the page */ }
  }

  function makeFrame() {
    frame = document.createElement("iframe");
    frame.title = options.label || "Chat with us";
    frame.src = frameUrl;
    frame.referrerPolicy = "strict-origin"; // the server checks the page's origin against the site's list
    frame.allow = "clipboard-write";
    Object.assign(frame.style, { border: "0", width: "100%", height: "100%", display: "block" });
    panel.append(frame);
  }

  function open() {
    if (!frame) makeFrame();
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    placePanel();
    try { sessionStorage.setItem(OPEN_KEY, "1"); } catch (err) { /* storage blocked */ }
    frame.focus();
    if (frameReady) frame.contentWindow.postMessage({ type: OPEN }, base);
  }

  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    placePanel();
    try { sessionStorage.removeItem(OPEN_KEY); } catch (err) { /* storage blocked */ }
    launcher.focus();
  }

  window.addEventListener("message", (event) => {
    if (!frame || event.origin !== base || event.source !== frame.contentWindow) return;
    const type = event.data && event.data.type;
    if (type === READY) {
      frameReady = true;
      frame.contentWindow.postMessage({ type: INIT, page: location.href, identity, token: kept(TOKEN_KEY) }, base);
    } else if (type === TOKEN && typeof event.data.token === "string") {
      keep(TOKEN_KEY, event.data.token);
    }
    else if (type === CLOSE) close();
  });
  launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
  SMALL.addEventListener("change", placePanel);
  shadow.append(launcher, panel);
  window.SupportWidget = { open, close };

  function mount() {
    document.body.append(host);
    placePanel();
    let wasOpen = false;
    try { wasOpen = sessionStorage.getItem(OPEN_KEY) === "1"; } catch (err) { /* storage blocked */ }
    if (wasOpen) open(); // a reload or the next page of the host site: the panel as the visitor left it
  }
  // An async tag in the page's <head> may run before there is a <body> to add the launcher to.
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
