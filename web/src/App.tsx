//! The shell of the console: the login gate, the navigation and the routes.
import { useEffect, useState, type FormEvent } from "react";
import { NavLink, Navigate, Route, Routes } from "react-router-dom";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, getToken, setToken, unwrap } from "./api/client";
import { ErrorBox, Field, Spinner } from "./ui";
import { Dashboard } from "./pages/Dashboard";
import { VmDetail, Vms } from "./pages/Vms";
import { FunctionDetail, Functions } from "./pages/Functions";
import { Images } from "./pages/Images";
import { Snapshots } from "./pages/Snapshots";
import { Hosts } from "./pages/Hosts";
import { Networks, Volumes } from "./pages/Networks";
import { Users } from "./pages/Users";
import { Audit } from "./pages/Audit";

function useToken() {
  const [token, set] = useState(getToken());
  useEffect(() => {
    const on = () => set(getToken());
    window.addEventListener("hearth-auth", on);
    return () => window.removeEventListener("hearth-auth", on);
  }, []);
  return token;
}

export function App() {
  const token = useToken();
  if (!token) return <Login />;
  return <Shell />;
}

const NAV = [
  ["/", "Dashboard"],
  ["/vms", "VMs"],
  ["/functions", "Functions"],
  ["/images", "Images"],
  ["/snapshots", "Snapshots"],
  ["/hosts", "Hosts"],
  ["/networks", "Networks"],
  ["/volumes", "Volumes"],
  ["/users", "Users & keys"],
  ["/audit", "Audit log"],
] as const;

function Shell() {
  const me = useQuery({
    queryKey: ["whoami"],
    queryFn: () => unwrap(client.GET("/v1/auth/whoami")),
  });
  const queries = useQueryClient();
  const [menu, setMenu] = useState(false);
  const logout = async () => {
    await client.POST("/v1/auth/logout").catch(() => undefined);
    setToken(null);
    queries.clear();
  };
  return (
    <div className="shell">
      <a href="#main" className="skip">
        Skip to content
      </a>
      <nav className={`nav${menu ? " open" : ""}`} aria-label="Main">
        <div className="brand">
          <span aria-hidden="true">▲</span> Hearth
          <button
            type="button"
            className="menu-toggle"
            aria-expanded={menu}
            aria-controls="nav-links"
            onClick={() => setMenu(!menu)}
          >
            Menu
          </button>
        </div>
        <ul id="nav-links">
          {NAV.map(([to, label]) => (
            <li key={to}>
              <NavLink to={to} end={to === "/"} onClick={() => setMenu(false)}>
                {label}
              </NavLink>
            </li>
          ))}
        </ul>
        <div className="me">
          {me.data ? (
            <>
              <span>
                {me.data.username} <small>({me.data.role})</small>
              </span>
              <button type="button" onClick={logout}>
                Log out
              </button>
            </>
          ) : me.isError ? (
            <ErrorBox error={me.error} />
          ) : null}
        </div>
      </nav>
      <main id="main" tabIndex={-1}>
        <Routes>
          <Route path="/" element={<Dashboard />} />
          <Route path="/vms" element={<Vms />} />
          <Route path="/vms/:id" element={<VmDetail />} />
          <Route path="/functions" element={<Functions />} />
          <Route path="/functions/:name" element={<FunctionDetail />} />
          <Route path="/images" element={<Images />} />
          <Route path="/snapshots" element={<Snapshots />} />
          <Route path="/hosts" element={<Hosts />} />
          <Route path="/networks" element={<Networks />} />
          <Route path="/volumes" element={<Volumes />} />
          <Route path="/users" element={<Users />} />
          <Route path="/audit" element={<Audit />} />
          <Route path="*" element={<Navigate to="/" replace />} />
        </Routes>
      </main>
    </div>
  );
}

function Login() {
  const [username, setUsername] = useState("admin");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    document.title = "Log in · Hearth";
  }, []);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await unwrap(client.POST("/v1/auth/login", { body: { username, password } }));
      setToken(r.token);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="login">
      <form onSubmit={submit} className="form card" aria-label="Log in">
        <h1>
          <span aria-hidden="true">▲</span> Hearth
        </h1>
        <Field label="Username">
          <input
            name="username"
            autoComplete="username"
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            required
          />
        </Field>
        <Field label="Password" hint="`hearth up` prints the admin password on its first start.">
          <input
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            required
            autoFocus
          />
        </Field>
        {error != null && <ErrorBox error={error} />}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
        {busy && <Spinner label="Checking…" />}
      </form>
    </main>
  );
}
