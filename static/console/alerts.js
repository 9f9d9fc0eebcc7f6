// Alerts on a new waiting conversation, both optional and per agent: the tab's title counts the waiting
// conversations that arrived since the agent last paid attention to the page ("(2) Support console"), and a short
// beep sounds as each arrives (WebAudio: an oscillator, no audio file).
//
// Per agent, in this browser: the choice is kept in localStorage under the agent's id, so two people sharing a
// browser profile keep theirs, and nothing is stored on the server (it is a property of the desk the agent sits
// at — sound on a headset, off in an open office — more than of the account).
//
// "New waiting": a row whose section becomes "waiting" and was not waiting in this page before (the list's
// snapshot is what was there already: no alert for it). "Seen": the agent clicks or types in the page, or comes
// back to the tab or the window; a conversation that stops waiting (taken over, handed back) is no longer counted.
// Sound needs a gesture first (the browsers' autoplay rule): ticking the box is one, and after a reload the first
// click or key in the page unlocks it; until then a new conversation only changes the title.

const STORAGE_PREFIX = "console.alerts.";
const BEEP_HZ = 880;
const BEEP_SECONDS = 0.18;

function readPrefs(key) {
  try {
    const saved = JSON.parse(localStorage.getItem(key) || "{}");
    return { title: saved.title === true, sound: saved.sound === true };
  } catch {
    return { title: false, sound: false }; // storage disabled or a hand-edited value: alerts off
  }
}

export class WaitingAlerts {
  /** `agentId`: whose preference (config.me.id). */
  constructor(agentId) {
    this.key = `${STORAGE_PREFIX}${agentId ?? "anonymous"}`;
    this.prefs = readPrefs(this.key);
    this.baseTitle = document.title;
    this.waiting = new Set(); // conversations this page knows are waiting
    this.unseen = new Set(); // of those, the ones that arrived since the agent last paid attention
    this.beeps = 0;
    this.audio = null;
    const attention = () => {
      this.unlockAudio();
      this.seen();
    };
    document.addEventListener("pointerdown", attention, true);
    document.addEventListener("keydown", attention, true);
    window.addEventListener("focus", () => this.seen());
    document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && this.seen());
  }

  /** The list page's checkboxes ([data-alert-toggle="title"|"sound"]): show and change the preference. */
  bindToggles(root) {
    for (const box of root.querySelectorAll("[data-alert-toggle]")) {
      const name = box.dataset.alertToggle;
      box.checked = this.prefs[name];
      box.addEventListener("change", () => {
        this.prefs[name] = box.checked;
        try {
          localStorage.setItem(this.key, JSON.stringify(this.prefs));
        } catch {
          // storage disabled: the choice holds for this page only
        }
        if (name === "sound" && box.checked) this.unlockAudio(); // this click is the gesture sound needs
        this.render();
      });
    }
  }

  /** The list snapshot (`conversations`): what waits already is not new. */
  snapshot(items) {
    this.waiting = new Set(items.filter((item) => item.section === "waiting").map((item) => item.conversation));
    for (const id of this.unseen) if (!this.waiting.has(id)) this.unseen.delete(id);
    this.render();
  }

  /** One row (`conversation_update`). */
  update(item) {
    const id = item.conversation;
    if (item.section !== "waiting") {
      this.gone(id);
      return;
    }
    if (this.waiting.has(id)) return;
    this.waiting.add(id);
    this.unseen.add(id);
    if (this.prefs.sound) this.beep();
    this.render();
  }

  /** A row that left the page's list (`conversation_hidden`) or stopped waiting. */
  gone(id) {
    this.waiting.delete(id);
    if (this.unseen.delete(id)) this.render();
  }

  seen() {
    if (!this.unseen.size) return;
    this.unseen.clear();
    this.render();
  }

  render() {
    const count = this.prefs.title ? this.unseen.size : 0;
    document.title = count ? `(${count}) ${this.baseTitle}` : this.baseTitle;
  }

  unlockAudio() {
    if (!this.prefs.sound) return;
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!this.audio && Context) this.audio = new Context();
    if (this.audio?.state === "suspended") this.audio.resume();
  }

  /** A short, soft tone; nothing before the page has been allowed to play sound. */
  beep() {
    if (!this.audio || this.audio.state !== "running") return;
    const now = this.audio.currentTime;
    const tone = this.audio.createOscillator();
    const volume = this.audio.createGain();
    tone.frequency.value = BEEP_HZ;
    volume.gain.setValueAtTime(0.0001, now);
    volume.gain.exponentialRampToValueAtTime(0.2, now + 0.02);
    volume.gain.exponentialRampToValueAtTime(0.0001, now + BEEP_SECONDS);
    tone.connect(volume).connect(this.audio.destination);
    tone.start(now);
    tone.stop(now + BEEP_SECONDS);
    this.beeps += 1;
    document.documentElement.dataset.alertBeeps = String(this.beeps);
  }
}
