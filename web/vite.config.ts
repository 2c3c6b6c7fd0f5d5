import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API to a manager on :18080, so the console can be worked on
// with hot reload; `npm run build` writes dist/, which the manager embeds.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1500 },
  server: {
    proxy: {
      "/v1": { target: "http://127.0.0.1:18080", ws: true },
    },
  },
});
