/* heater.c: a room-heater control task written in C that speaks the nondiff bridge protocol
 * (docs/protocol.md) on stdin/stdout. Build: cc -O2 -o heater heater.c -lm
 *
 *   --instances K       host K rooms behind one connection (protocol 1.1, num_instances: K); batched messages
 *   --connect HOST:PORT connect to a nondiff that listens (env.listen=HOST:PORT) instead of using stdin/stdout;
 *                       after each session connect again; give up after --connect-wait S seconds (default 30)
 *                       of refused connections. HOST is an IPv4 address or "localhost". A session that nondiff
 *                       ends before the first request (it refused this program, with an "error" saying why,
 *                       printed to stderr) is a refusal: the pause before the next try doubles from 0.5 s to
 *                       at most 8 s, and after --max-refusals N (default 5) refusals in a row the heater exits 0.
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
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME (1 << 20)
static long crash_after = -1, hang_after = -1, garbage_after = -1, nan_after = -1, inf_after = -1;
static int crash_in_reset = 0;
static const char *version = "1.0";
static long K = -1;                       /* --instances: -1 = protocol 1.0, one room */
static long served = 0;                   /* requests served in the current session (0: it was refused) */
static int in_fd = 0, out_fd = 1;
static unsigned char buf[MAX_FRAME];
static unsigned char out[MAX_FRAME];

static int read_exact(unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(in_fd, p, n);
    if (r <= 0) return -1; /* EOF or error: nondiff is gone */
    p += r; n -= (size_t)r;
  }
  return 0;
}
static void write_exact(const void *p, size_t n) {
  const unsigned char *c = p;
  while (n > 0) { ssize_t w = write(out_fd, c, n); if (w <= 0) return; c += w; n -= (size_t)w; }
}
static const char *field(const char *json, const char *key);
static void put_u32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static uint32_t get_u32(const unsigned char *p) { return ((uint32_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }

/* Send a frame: header JSON, then optional raw bytes, in one write (one wake-up for the reader). */
static void send_msg(const char *header, const void *data, size_t nbytes) {
  uint32_t hlen = (uint32_t)strlen(header);
  if (8 + hlen + nbytes > sizeof out) exit(7);
  put_u32(out, 4 + hlen + (uint32_t)nbytes);
  put_u32(out + 4, hlen);
  memcpy(out + 8, header, hlen);
  if (nbytes) memcpy(out + 8 + hlen, data, nbytes);
  write_exact(out, 8 + hlen + nbytes);
}
/* Read a frame; returns header (NUL-terminated, inside buf) and sets *blob to the bytes after it; NULL at the
 * end of the stream (nondiff is gone or closed the connection). */
static char *recv_msg(unsigned char **blob) {
  unsigned char pre[4];
  if (read_exact(pre, 4)) return NULL;
  uint32_t len = get_u32(pre);
  if (len < 4 || len >= MAX_FRAME) exit(5);
  if (read_exact(buf, len)) return NULL;
  uint32_t hlen = get_u32(buf);
  if (hlen + 4 > len) exit(5);
  memmove(buf, buf + 4, hlen);      /* header to the front, NUL-terminate it; the arrays stay where they are */
  buf[hlen] = 0;
  *blob = buf + 4 + hlen;
  return (char *)buf;
}
/* Parse a JSON list of integers (null -> dflt) after "key": into v (at most max); returns the count, -1 if absent. */
static long int_list(const char *json, const char *key, long long *v, long max, long long dflt) {
  const char *p = field(json, key);
  if (!p || *p != '[') return -1;
  long n = 0;
  for (p++; *p && *p != ']' && n < max;) {
    if (*p == 'n') { v[n++] = dflt; p += 4; } else { char *e; v[n++] = strtoll(p, &e, 10); p = e; }
    if (*p == ',') p++;
  }
  return n;
}
static const char *field(const char *json, const char *key) {
  static char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(json, pat);
  return p ? p + strlen(pat) : NULL;
}

/* the simulated rooms: one per instance (one without --instances) */
typedef struct { double T, S, ambient; long t; uint64_t rng; } Room;
static Room *rooms;
static long total_steps;
static double uniform(Room *r) { r->rng ^= r->rng << 13; r->rng ^= r->rng >> 7; r->rng ^= r->rng << 17; return (r->rng >> 11) * (1.0 / 9007199254740992.0); }
static void reset_room(Room *r, int seeded, long long seed) {
  if (seeded) r->rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)seed * 2654435761ULL;
  if (r->rng == 0) r->rng = 1;
  for (int k = 0; k < 4; k++) uniform(r);
  r->ambient = 10.0 * uniform(r); r->S = 15.0 + 10.0 * uniform(r); r->T = r->ambient + 5.0 * uniform(r); r->t = 0;
}
static double step_room(Room *r, float u) {
  if (!(u >= 0)) u = 0;
  if (u > 1) u = 1;
  r->T += 0.1 * (30.0 * u - 0.5 * (r->T - r->ambient));
  r->t++;
  return -fabs(r->S - r->T) / 10.0 - 0.01 * u * u;
}
static void room_obs(const Room *r, float *obs, int bad) {
  obs[0] = (float)(r->T / 30.0); obs[1] = (float)((r->S - r->T) / 10.0); obs[2] = (float)(r->ambient / 10.0);
  if (bad == 1) obs[0] = NAN;
  if (bad == 2) obs[1] = INFINITY;
}

static void send_obs(const char *type, double reward, int terminated, int truncated, int bad) {
  float obs[3];
  room_obs(&rooms[0], obs, bad);
  char header[512];
  double err = fabs(rooms[0].S - rooms[0].T);
  snprintf(header, sizeof header,
           "{\"type\":\"%s\",\"obs\":{\"$array\":0},\"reward\":%.9g,\"terminated\":%s,\"truncated\":%s,"
           "\"info\":{\"is_success\":%s,\"error\":%.6g},\"arrays\":[{\"dtype\":\"<f4\",\"shape\":[3]}]}",
           type, reward, terminated ? "true" : "false", truncated ? "true" : "false", err < 0.5 ? "true" : "false", err);
  send_msg(header, obs, sizeof obs);
}

/* Protocol 1.1: one reply for the n instances idx[0..n): obs [n,3] f4 (+ rewards [n] f8, flags [n] bool on a step). */
static void send_batch(const char *type, const long long *idx, long n, const double *rew, const unsigned char *trunc,
                       int bad) {
  static char header[1 << 18];
  static unsigned char data[1 << 19];
  int step = !strcmp(type, "step_result");
  size_t off = 0, h;
  for (long j = 0; j < n; j++) { room_obs(&rooms[idx[j]], (float *)(data + off), j == 0 ? bad : 0); off += 12; }
  h = (size_t)snprintf(header, sizeof header, "{\"type\":\"%s\",\"obs\":{\"$array\":0},", type);
  if (step) {
    memcpy(data + off, rew, 8 * n); off += 8 * n;
    memset(data + off, 0, n); off += n;              /* terminated: the heater never terminates */
    memcpy(data + off, trunc, n); off += n;
    h += (size_t)snprintf(header + h, sizeof header - h,
                          "\"rewards\":{\"$array\":1},\"terminated\":{\"$array\":2},\"truncated\":{\"$array\":3},");
  }
  h += (size_t)snprintf(header + h, sizeof header - h, "\"infos\":[");
  for (long j = 0; j < n; j++) {
    double err = fabs(rooms[idx[j]].S - rooms[idx[j]].T);
    h += (size_t)snprintf(header + h, sizeof header - h, "%s{\"is_success\":%s,\"error\":%.6g}", j ? "," : "",
                          err < 0.5 ? "true" : "false", err);
  }
  h += (size_t)snprintf(header + h, sizeof header - h, "],\"arrays\":[{\"dtype\":\"<f4\",\"shape\":[%ld,3]}", n);
  if (step)
    h += (size_t)snprintf(header + h, sizeof header - h, ",{\"dtype\":\"<f8\",\"shape\":[%ld]},{\"dtype\":\"|b1\","
                          "\"shape\":[%ld]},{\"dtype\":\"|b1\",\"shape\":[%ld]}", n, n, n);
  snprintf(header + h, sizeof header - h, "]}");
  send_msg(header, data, off);
}

/* One session: handshake, then requests until close or the end of the stream. Returns 0, or an exit code. */
static int session(void) {
  unsigned char *blob;
  char *msg = recv_msg(&blob);
  if (!msg) return 0;
  if (!strstr(msg, "\"type\":\"hello\"")) return 6;
  static char header[2048];
  snprintf(header, sizeof header, "{\"type\":\"challenge\",\"version\":\"%s\",\"nonce\":\"c0ffee\",\"mac\":\"\"}",
           K >= 0 && !strcmp(version, "1.0") ? "1.1" : version);
  send_msg(header, NULL, 0);
  if (!(msg = recv_msg(&blob))) return 0;
  if (!strstr(msg, "\"type\":\"auth\"")) return 6;
  char extra[64] = "";
  if (K >= 0) snprintf(extra, sizeof extra, "\"num_instances\":%ld,", K);
  snprintf(header, sizeof header, "{\"type\":\"spec\",\"env\":\"heater\",\"version\":\"%s\",%s"
           "\"observation_space\":{\"type\":\"Box\",\"low\":[-10,-10,-10],\"high\":[10,10,10],\"shape\":[3],\"dtype\":\"float32\"},"
           "\"action_space\":{\"type\":\"Box\",\"low\":[0],\"high\":[1],\"shape\":[1],\"dtype\":\"float32\"},"
           "\"metadata\":{}}", K >= 0 ? "1.1" : "1.0", extra);
  send_msg(header, NULL, 0);
  long n_rooms = K > 0 ? K : 1;
  static long long idx[65536], seeds[65536];
  static double rew[65536];
  static unsigned char trunc[65536];
  for (;;) {
    if (!(msg = recv_msg(&blob))) return 0;
    if (strstr(msg, "\"type\":\"error\"")) {   /* nondiff refused this program and says why */
      const char *why = field(msg, "message");
      if (why && *why == '"') why++;
      int len = why ? (int)strcspn(why, "\"") : 0;
      fprintf(stderr, "heater: nondiff ended the session: %.*s\n", len > 300 ? 300 : len, why ? why : "");
      return 0;
    }
    served++;
    if (strstr(msg, "\"type\":\"reset\"")) {
      if (crash_in_reset) { fprintf(stderr, "heater: reset failed: sensor bus offline\n"); return 4; }
      if (K < 0) {
        const char *seed = field(msg, "seed");
        reset_room(&rooms[0], seed && *seed != 'n', seed ? atoll(seed) : 0);
        send_obs("reset_result", 0, 0, 0, 0);
        continue;
      }
      long n = int_list(msg, "instances", idx, n_rooms, 0);
      if (n < 0) { n = n_rooms; for (long j = 0; j < n; j++) idx[j] = j; }
      long ns = int_list(msg, "seeds", seeds, n, -1);
      for (long j = 0; j < n; j++) {
        if (idx[j] < 0 || idx[j] >= n_rooms) { send_msg("{\"type\":\"error\",\"message\":\"bad instance index\"}", NULL, 0); goto next; }
        reset_room(&rooms[idx[j]], j < ns && seeds[j] >= 0, j < ns ? seeds[j] : 0);
      }
      send_batch("reset_result", idx, n, NULL, NULL, 0);
    } else if (strstr(msg, "\"type\":\"step\"")) {
      total_steps++;
      if (crash_after >= 0 && total_steps >= crash_after) { fprintf(stderr, "heater: segfault in solver\n"); abort(); }
      if (hang_after >= 0 && total_steps >= hang_after) for (;;) pause();
      if (garbage_after >= 0 && total_steps >= garbage_after) { write_exact("\xff\xff\xff\xffGARBAGE", 11); continue; }
      if (!strstr(msg, "\"dtype\":\"<f4\"")) { send_msg("{\"type\":\"error\",\"message\":\"action must be float32\"}", NULL, 0); continue; }
      int bad = (nan_after >= 0 && total_steps >= nan_after) ? 1 : (inf_after >= 0 && total_steps >= inf_after) ? 2 : 0;
      if (K < 0) {
        float u; memcpy(&u, blob, sizeof u);
        double reward = step_room(&rooms[0], u);
        send_obs("step_result", reward, 0, rooms[0].t >= 100, bad);
        continue;
      }
      long n = int_list(msg, "instances", idx, n_rooms, 0);
      if (n < 0) { n = n_rooms; for (long j = 0; j < n; j++) idx[j] = j; }
      for (long j = 0; j < n; j++) {
        if (idx[j] < 0 || idx[j] >= n_rooms) { send_msg("{\"type\":\"error\",\"message\":\"bad instance index\"}", NULL, 0); goto next; }
        float u; memcpy(&u, blob + 4 * j, sizeof u);   /* actions: [n, 1] float32 */
        rew[j] = step_room(&rooms[idx[j]], u);
        trunc[j] = rooms[idx[j]].t >= 100;
      }
      send_batch("step_result", idx, n, rew, trunc, bad);
    } else if (strstr(msg, "\"type\":\"close\"")) {
      send_msg("{\"type\":\"bye\"}", NULL, 0);
      return 0;
    } else {
      send_msg("{\"type\":\"error\",\"message\":\"unsupported message\"}", NULL, 0);
    }
  next:;
  }
}

/* --connect: a connected socket to HOST:PORT, retrying refused connections for `wait` seconds; -1 on giving up. */
static int connect_to(const char *addr, double wait) {
  char host[256]; const char *colon = strrchr(addr, ':');
  if (!colon || colon - addr >= (long)sizeof host) { fprintf(stderr, "heater: --connect needs HOST:PORT\n"); exit(2); }
  memcpy(host, addr, colon - addr); host[colon - addr] = 0;
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET; sa.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1", &sa.sin_addr) != 1) {
    fprintf(stderr, "heater: --connect %s: not an IPv4 address\n", addr); exit(2);
  }
  struct timespec nap = {0, 200000000};
  for (double waited = 0;; waited += 0.2) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
      int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    if (fd >= 0) close(fd);
    if (waited >= wait) return -1;
    nanosleep(&nap, NULL);
  }
}

int main(int argc, char **argv) {
  const char *connect_addr = NULL;
  double connect_wait = 30;
  long max_refusals = 5, refusals = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--crash-after") && i + 1 < argc) crash_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--hang-after") && i + 1 < argc) hang_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--garbage-after") && i + 1 < argc) garbage_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--nan-after") && i + 1 < argc) nan_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--inf-after") && i + 1 < argc) inf_after = atol(argv[++i]);
    else if (!strcmp(argv[i], "--version") && i + 1 < argc) version = argv[++i];
    else if (!strcmp(argv[i], "--instances") && i + 1 < argc) K = atol(argv[++i]);
    else if (!strcmp(argv[i], "--connect") && i + 1 < argc) connect_addr = argv[++i];
    else if (!strcmp(argv[i], "--connect-wait") && i + 1 < argc) connect_wait = atof(argv[++i]);
    else if (!strcmp(argv[i], "--max-refusals") && i + 1 < argc) max_refusals = atol(argv[++i]);
    else if (!strcmp(argv[i], "--crash-in-reset")) crash_in_reset = 1;
    else if (!strcmp(argv[i], "--ignore-sigterm")) signal(SIGTERM, SIG_IGN);
  }
  long n_rooms = K > 0 ? K : 1;
  if (n_rooms > 65536) n_rooms = 65536;   /* a K this large is refused by nondiff at the handshake anyway */
  rooms = calloc((size_t)n_rooms, sizeof *rooms);
  for (long i = 0; i < n_rooms; i++) rooms[i].rng = 88172645463325252ULL + 0x9E3779B97F4A7C15ULL * (uint64_t)i;
  if (!connect_addr) return session();
  signal(SIGPIPE, SIG_IGN);
  for (;;) {   /* connect mode: one session per connection, then connect again */
    int fd = connect_to(connect_addr, connect_wait);
    if (fd < 0) { fprintf(stderr, "heater: nobody listens on %s; exiting\n", connect_addr); return 0; }
    in_fd = out_fd = fd;
    served = 0;
    int code = session();
    close(fd);
    if (code) return code;
    double pause = 0.2;
    if (served) refusals = 0;
    else {   /* refused: back off, and give up after a few refusals in a row */
      if (++refusals >= max_refusals) {
        fprintf(stderr, "heater: %s refused this program %ld times in a row; giving up\n", connect_addr, refusals);
        return 0;
      }
      pause = 0.5 * (double)(1L << (refusals - 1));
      if (pause > 8) pause = 8;
      fprintf(stderr, "heater: refused by %s (%ld of %ld); trying again in %g s\n", connect_addr, refusals,
              max_refusals, pause);
    }
    struct timespec nap = {(time_t)pause, (long)((pause - (double)(time_t)pause) * 1e9)};
    nanosleep(&nap, NULL);
  }
}
