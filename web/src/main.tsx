import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { BrowserRouter } from "react-router-dom";
import { App } from "./App";
import { ApiError } from "./api/client";
import { Toasts } from "./ui";
import "./style.css";

const queries = new QueryClient({
  defaultOptions: {
    queries: {
      // A 4xx will answer the same again; anything else gets one more try.
      retry: (n, e) => !(e instanceof ApiError && e.status >= 400 && e.status < 500) && n < 1,
      refetchOnWindowFocus: false,
    },
  },
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <QueryClientProvider client={queries}>
      <BrowserRouter>
        <Toasts>
          <App />
        </Toasts>
      </BrowserRouter>
    </QueryClientProvider>
  </StrictMode>,
);
