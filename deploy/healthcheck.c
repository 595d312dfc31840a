/* healthcheck.c — the container images' HEALTHCHECK: `lotmesh-healthcheck [PATH]` asks
 * GET PATH (default /ready) of the process in the same container, on 127.0.0.1:$PORT, and exits
 * 0 on a 200 answer, 1 on any other answer or failure (one line on stderr saying which).
 * The runtime images hold no shell and no curl, so this is the probe Docker and podman run.
 * Single-threaded; everything it allocates is on its stack; the whole run is bounded by an
 * alarm (HEALTHCHECK_TIMEOUT_S, default 3 s), so a hung process fails the check instead of
 * hanging it. Built with the images only (deploy/Containerfile), against the same libc. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "lotmesh-healthcheck: no answer in time\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(1);
    _exit(1);
}

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < lo || n > hi) return -1;
    return n;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/ready";
    long port = env_long("PORT", 8000, 1, 65535);
    long secs = env_long("HEALTHCHECK_TIMEOUT_S", 3, 1, 600);
    if (port < 0 || secs < 0 || path[0] != '/' || strlen(path) > 256 || strpbrk(path, " \r\n")) {
        fprintf(stderr, "lotmesh-healthcheck: bad PORT, HEALTHCHECK_TIMEOUT_S or path\n");
        return 1;
    }
    signal(SIGALRM, on_alarm);
    alarm((unsigned)secs);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "lotmesh-healthcheck: cannot connect to 127.0.0.1:%ld: %s\n", port,
                strerror(errno));
        return 1;
    }
    char req[400];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: lotmesh-healthcheck\r\n"
                     "Connection: close\r\n\r\n",
                     path);
    for (int off = 0; off < n;) {
        ssize_t w = write(fd, req + off, (size_t)(n - off));
        if (w <= 0) {
            fprintf(stderr, "lotmesh-healthcheck: write: %s\n", strerror(errno));
            return 1;
        }
        off += (int)w;
    }
    char head[64];
    size_t got = 0;
    while (got < sizeof head - 1) {
        ssize_t r = read(fd, head + got, sizeof head - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    head[got] = '\0';
    close(fd);
    if (strncmp(head, "HTTP/1.1 200 ", 13) == 0 || strncmp(head, "HTTP/1.0 200 ", 13) == 0)
        return 0;
    char *eol = strpbrk(head, "\r\n");
    if (eol) *eol = '\0';
    fprintf(stderr, "lotmesh-healthcheck: GET %s answered \"%s\"\n", path,
            got ? head : "(nothing)");
    return 1;
}
