// The console against a real `hearth up`: every step goes through the browser, and a failure
// shown by the page (an error box) or logged in its console fails the test.
import { expect, test, type Page } from "@playwright/test";

const password = process.env.HEARTH_PASSWORD ?? "";
const shots = process.env.HEARTH_SCREENSHOTS;

async function shot(page: Page, name: string) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png` });
}

function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  return errors;
}

/** Follows a link of the main navigation. */
async function nav(page: Page, name: string) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true }).click();
}

async function login(page: Page, pass: string) {
  await page.goto("/");
  await page.getByLabel("Username", { exact: true }).fill("admin");
  await page.getByLabel("Password", { exact: true }).fill(pass);
  await page.getByRole("button", { name: "Log in" }).click();
}

test("a wrong password shows the API's error", async ({ page }) => {
  const errors = watchConsole(page);
  await login(page, "not-the-password");
  await expect(page.getByRole("alert")).toContainText(/password/i);
  await shot(page, "login-error");
  // The 401 itself is the only thing the browser may log.
  expect(errors.filter((e) => !e.includes("401"))).toEqual([]);
});

test("log in, run a VM and a function, delete both", async ({ page }) => {
  // A fresh checkout builds the python runtime during the deploy, behind the other tests'
  // builds on the shared images directory.
  test.setTimeout(40 * 60_000);
  const errors = watchConsole(page);
  await login(page, password);
  await expect(page.getByRole("heading", { name: "Dashboard" })).toBeVisible();
  await expect(page.getByRole("region", { name: "Hosts" })).toContainText("1/1");
  await shot(page, "dashboard");

  // A VM: create it, see it running, open its shell and type.
  await nav(page, "VMs");
  await page.getByRole("button", { name: "Create VM" }).click();
  const dialog = page.getByRole("dialog", { name: "Create VM" });
  await dialog.getByLabel("Name", { exact: true }).fill("web1");
  await dialog.getByRole("button", { name: "Create" }).click();
  await expect(page.getByRole("heading", { name: "VM web1" })).toBeVisible();
  await expect(page.locator(".facts .badge")).toHaveText("running", { timeout: 300_000 });
  await page.getByRole("tab", { name: "Shell" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Shell: open" })).toBeVisible();
  const shell = page.getByTestId("shell");
  await shell.click();
  await page.keyboard.type("echo hi-from-$((40+2))\n");
  await expect(shell.locator(".xterm-rows")).toContainText("hi-from-42");
  await shot(page, "vm-shell");
  await page.getByRole("tab", { name: "Metrics" }).click();
  await expect(page.locator("figure.chart").first()).toContainText("cpu");
  await page.waitForTimeout(2500);
  await shot(page, "vm-metrics");
  await nav(page, "VMs");
  await expect(page.getByRole("table", { name: "VMs" })).toContainText("web1");
  await shot(page, "vms");

  // A python function: deploy it, invoke it, see its output.
  await nav(page, "Functions");
  await page.getByRole("button", { name: "Create function" }).click();
  const fdialog = page.getByRole("dialog", { name: "Create function" });
  await fdialog.getByLabel("Name", { exact: true }).fill("hello");
  await fdialog.getByLabel("Runtime").selectOption("python");
  await fdialog.getByRole("button", { name: "Deploy" }).click();
  const deployed = page.getByRole("heading", { name: "Function hello" });
  await expect(deployed.or(fdialog.getByRole("alert"))).toBeVisible({ timeout: 30 * 60_000 });
  expect(await fdialog.getByRole("alert").allTextContents()).toEqual([]);
  await expect(deployed).toBeVisible();
  await page.getByLabel("Payload (JSON)").fill('{"name": "browser"}');
  await page.getByRole("button", { name: "Invoke", exact: true }).click();
  await expect(page.getByTestId("invoke-output")).toContainText('"hello": "browser"', { timeout: 600_000 });
  await shot(page, "function-invoke");
  await page.getByRole("tab", { name: "Metrics" }).click();
  await expect(page.getByRole("tabpanel").locator(".facts")).toContainText("Invocations");
  await shot(page, "function-metrics");

  // The other pages load without errors.
  for (const [link, heading, name] of [
    ["Images", "Images", "images"],
    ["Hosts", "Hosts", "hosts"],
    ["Networks", "Networks", "networks"],
    ["Audit log", "Audit log", "audit"],
  ] as const) {
    await nav(page, link);
    await expect(page.getByRole("heading", { name: heading, exact: true })).toBeVisible();
    await expect(page.locator(".loading")).toHaveCount(0);
    await expect(page.locator("p.error")).toHaveCount(0);
    await shot(page, name);
  }
  await nav(page, "Dashboard");
  await expect(page.getByRole("figure")).toContainText("calls 1");
  await shot(page, "dashboard");

  // Drain the only host: the VM has its own disk, so it stays, and the page says why; the
  // function's VM is removed (its pool would boot another elsewhere).
  await nav(page, "Hosts");
  await page.getByRole("button", { name: "Drain" }).click();
  await page.getByRole("dialog", { name: "Drain" }).getByRole("button", { name: "Drain" }).click();
  const report = page.getByRole("status", { name: /Drain of/ });
  await expect(report).toContainText(/web1 stays: its own disk/);
  await expect(report).toContainText("a function's VM: removed");
  await shot(page, "host-drain");
  await page.getByRole("button", { name: "Uncordon" }).click();
  await expect(page.getByRole("button", { name: "Cordon" })).toBeVisible();

  // Delete both, each after a confirmation.
  await nav(page, "Functions");
  await page.getByRole("link", { name: "hello" }).click();
  await page.getByRole("button", { name: "Delete" }).click();
  await page.getByRole("dialog", { name: "Delete" }).getByRole("button", { name: "Delete" }).click();
  await expect(page.getByRole("heading", { name: "Functions" })).toBeVisible();
  await expect(page.getByText("No functions yet")).toBeVisible();
  await nav(page, "VMs");
  await page.getByRole("row", { name: /web1/ }).getByRole("button", { name: "Delete" }).click();
  await page.getByRole("dialog", { name: "Delete" }).getByRole("button", { name: "Delete" }).click();
  await expect(page.getByText("No VMs yet")).toBeVisible({ timeout: 60_000 });

  expect(errors).toEqual([]);
});
