# Mint node image: Node 22 (Moleculer 0.15's minimum). SERVICES picks what it hosts.
FROM node:22-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev && mkdir -p /app/data

# The runtime stage copies only what a node runs: test/process/image.test.ts
# replays these COPY lines into a folder and starts every kind of node there.
FROM node:22-slim
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/templates ./templates
# The email-link pages and the docs page (Swagger UI itself comes from node_modules).
COPY --from=build /app/public ./public
# The embedded store, .eml files and generated secrets: owned by the user the node runs as, kept in a volume.
COPY --from=build --chown=node:node /app/data ./data
VOLUME /app/data
USER node
EXPOSE 3000
# Every node answers /ready on PORT: the gateway, or the probe server of a node without one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# --experimental-async-context-frame: see lib/node-options.ts (the request context costs nothing per promise).
CMD ["node", "--experimental-async-context-frame", "dist/server.js"]
