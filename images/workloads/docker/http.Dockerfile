# outpost-http: answers every GET with its pod name; /healthz, /fail.
# Exec probe: ["/usr/bin/outpost-http", "--probe"].
# Test workload for Outpost's scenario tests, built by
# images/workloads/build-images.sh as outpost/workload-http:dev, which puts the
# static binary into the build context. No shell or libc in the image: exec
# probes and commands can only run the binary itself.
FROM scratch
COPY outpost-http /usr/bin/outpost-http
EXPOSE 8080
ENTRYPOINT ["/usr/bin/outpost-http"]
