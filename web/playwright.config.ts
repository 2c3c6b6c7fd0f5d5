import { defineConfig } from "@playwright/test";

// Debian's Chromium, never a downloaded browser. The tests expect a running `hearth up` at
// HEARTH_URL whose admin password is HEARTH_PASSWORD (crates/hearth/tests/web.rs sets both).
export default defineConfig({
  testDir: "e2e",
  timeout: 600_000,
  expect: { timeout: 30_000 },
  workers: 1,
  use: {
    baseURL: process.env.HEARTH_URL ?? "http://127.0.0.1:18080",
    viewport: { width: 1280, height: 800 },
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
});
