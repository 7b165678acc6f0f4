# outpost-burn: keeps CPUs busy (--threads, --seconds, --duty).
# Test workload for Outpost's scenario tests, built by
# images/workloads/build-images.sh as outpost/workload-burn:dev, which puts the
# static binary into the build context. No shell or libc in the image: exec
# probes and commands can only run the binary itself.
FROM scratch
COPY outpost-burn /usr/bin/outpost-burn
ENTRYPOINT ["/usr/bin/outpost-burn"]
