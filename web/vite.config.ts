import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the board on :5173 and proxies the API to a Commitcast server on
// :8000 (`./scripts/serve`); `npm run build` writes web/dist, which the server serves at /.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: { "/graphql": { target: "http://127.0.0.1:8000", ws: true } },
    // The resume helper is the tested one in clients/recipes, imported as is.
    fs: { allow: [".", "../clients/recipes"] },
  },
});
