/* heater.c: a room-heater control task written in C that speaks the nondiff bridge protocol
 * (docs/protocol.md) on stdin/stdout. Build: cc -O2 -o heater heater.c -lm
 *
 * Task: keep the room temperature T at a set point S (drawn per episode) with heater power u in [0, 1].
 *   T' = T + dt * (HEAT * u - LOSS * (T - ambient))
 *   observation (float32[3]) = [T / 30, (S - T) / 10, ambient / 10]
 *   reward = -|S - T| / 10 - 0.01 u^2; 100 steps per episode; success: |S - T| < 0.5 at the end.
 *
 * Fault injection for the tests (all off by default):
 *   --crash-after N  exit(3) at step N       --hang-after N     stop answering at step N
 *   --garbage-after N  write garbage bytes    --nan-after N / --inf-after N   bad observation values
 *   --crash-in-reset   exit(4) on every reset --ignore-sigterm   ignore SIGTERM
 *   --version X.Y      announce another protocol version
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FRAME (1 << 20)
static long crash_after = -1, hang_after = -1, garbage_after = -1, nan_after = -1, inf_after = -1;
static int crash_in_reset = 0;
static const char *version = "1.0";
static unsigned char buf[MAX_FRAME];

static int read_exact(unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(0, p, n);
    if (r <= 0) return -1; /* EOF or error: nondiff is gone */
    p += r; n -= (size_t)r;
  }
  return 0;
}
static void write_exact(const void *p, size_t n) {
  const unsigned char *c = p;
  while (n > 0) { ssize_t w = write(1, c, n); if (w <= 0) exit(0); c += w; n -= (size_t)w; }
}
static void put_u32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static uint32_t get_u32(const unsigned char *p) { return ((uint32_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }

/* Send a frame: header JSON, then optional raw bytes, in one write (one wake-up for the reader). */
static void send_msg(const char *header, const void *data, size_t nbytes) {
  static unsigned char out[8 + 4096];
  uint32_t hlen = (uint32_t)strlen(header);
  if (8 + hlen + nbytes > sizeof out) exit(7);
  put_u32(out, 4 + hlen + (uint32_t)nbytes);
  put_u32(out + 4, hlen);
  memcpy(out + 8, header, hlen);
  if (nbytes) memcpy(out + 8 + hlen, data, nbytes);
  write_exact(out, 8 + hlen + nbytes);
}
/* Read a frame; returns header (NUL-terminated, inside buf) and sets *blob to the bytes after it. */
static char *recv_msg(unsigned char **blob) {
  unsigned char pre[4];
  if (read_exact(pre, 4)) exit(0);
  uint32_t len = get_u32(pre);
  if (len < 4 || len >= MAX_FRAME) exit(5);
  if (read_exact(buf, len)) exit(0);
  uint32_t hlen = get_u32(buf);
  if (hlen + 4 > len) exit(5);
  memmove(buf, buf + 4, hlen);      /* header to the front, NUL-terminate it */
  unsigned char *data = buf + 4 + hlen;
  size_t nbytes = len - 4 - hlen;
  static unsigned char raw[64];
  memcpy(raw, data, nbytes < sizeof raw ? nbytes : sizeof raw);
  buf[hlen] = 0;
  *blob = raw;
  return (char *)buf;
}
static const char *field(const char *json, const char *key) {
  static char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(json, pat);
  return p ? p + strlen(pat) : NULL;
}

/* the simulated room */
static double T, S, ambient;
static long t, total_steps;
static uint64_t rng = 88172645463325252ULL;
static double uniform(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (rng >> 11) * (1.0 / 9007199254740992.0); }

static void send_obs(const char *type, double reward, int terminated, int truncated, int bad) {
  float obs[3] = {(float)(T / 30.0), (float)((S - T) / 10.0), (float)(ambient / 10.0)};
  if (bad == 1) obs[0] = NAN;
  if (bad == 2) obs[1] = INFINITY;
  char header[512];
  double err = fabs(S - T);
  snprintf(header, sizeof header,
           "{\"type\":\"%s\",\"obs\":{\"$array\":0},\"reward\":%.9g,\"terminated\":%s,\"truncated\":%s,"
           "\"info\":{\"is_success\":%s,\"error\":%.6g},\"arrays\":[{\"dtype\":\"<f4\",\"shape\":[3]}]}",
           type, reward, terminated ? "true" : "false", truncated ? "true" : "false", err < 0.5 ? "true" : "false", err);
  send_msg(header, obs, sizeof obs);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--crash-after") && i + 1 < argc) crash_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--hang-after") && i + 1 < argc) hang_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--garbage-after") && i + 1 < argc) garbage_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--nan-after") && i + 1 < argc) nan_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--inf-after") && i + 1 < argc) inf_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--version") && i + 1 < argc) version = argv[++i];
    else if (!strcmp(argv[i], "--crash-in-reset")) crash_in_reset = 1;
    else if (!strcmp(argv[i], "--ignore-sigterm")) signal(SIGTERM, SIG_IGN);
  }
  unsigned char *blob;
  char *msg = recv_msg(&blob);
  if (!strstr(msg, "\"type\":\"hello\"")) return 6;
  char header[1024];
  snprintf(header, sizeof header, "{\"type\":\"challenge\",\"version\":\"%s\",\"nonce\":\"c0ffee\",\"mac\":\"\"}", version);
  send_msg(header, NULL, 0);
  msg = recv_msg(&blob);
  if (!strstr(msg, "\"type\":\"auth\"")) return 6;
  send_msg("{\"type\":\"spec\",\"env\":\"heater\",\"version\":\"1.0\","
           "\"observation_space\":{\"type\":\"Box\",\"low\":[-10,-10,-10],\"high\":[10,10,10],\"shape\":[3],\"dtype\":\"float32\"},"
           "\"action_space\":{\"type\":\"Box\",\"low\":[0],\"high\":[1],\"shape\":[1],\"dtype\":\"float32\"},"
           "\"metadata\":{}}", NULL, 0);
  for (;;) {
    msg = recv_msg(&blob);
    if (strstr(msg, "\"type\":\"reset\"")) {
      if (crash_in_reset) { fprintf(stderr, "heater: reset failed: sensor bus offline\n"); return 4; }
      const char *seed = field(msg, "seed");
      if (seed && *seed != 'n') rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)atoll(seed) * 2654435761ULL;
      if (rng == 0) rng = 1;
      for (int k = 0; k < 4; k++) uniform();
      ambient = 10.0 * uniform(); S = 15.0 + 10.0 * uniform(); T = ambient + 5.0 * uniform(); t = 0;
      send_obs("reset_result", 0, 0, 0, 0);
    } else if (strstr(msg, "\"type\":\"step\"")) {
      total_steps++;
      if (crash_after >= 0 && total_steps >= crash_after) { fprintf(stderr, "heater: segfault in solver\n"); abort(); }
      if (hang_after >= 0 && total_steps >= hang_after) for (;;) pause();
      if (garbage_after >= 0 && total_steps >= garbage_after) { write_exact("\xff\xff\xff\xffGARBAGE", 11); continue; }
      if (!strstr(msg, "\"dtype\":\"<f4\"")) { send_msg("{\"type\":\"error\",\"message\":\"action must be float32\"}", NULL, 0); continue; }
      float u; memcpy(&u, blob, sizeof u);
      if (!(u >= 0)) u = 0;
      if (u > 1) u = 1;
      T += 0.1 * (30.0 * u - 0.5 * (T - ambient));
      t++;
      double reward = -fabs(S - T) / 10.0 - 0.01 * u * u;
      int bad = (nan_after >= 0 && total_steps >= nan_after) ? 1 : (inf_after >= 0 && total_steps >= inf_after) ? 2 : 0;
      send_obs("step_result", reward, 0, t >= 100, bad);
    } else if (strstr(msg, "\"type\":\"close\"")) {
      send_msg("{\"type\":\"bye\"}", NULL, 0);
      return 0;
    } else {
      send_msg("{\"type\":\"error\",\"message\":\"unsupported message\"}", NULL, 0);
    }
  }
}
