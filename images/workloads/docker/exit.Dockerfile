# outpost-exit: waits --after-ms, then exits with --code.
# Test workload for Outpost's scenario tests, built by
# images/workloads/build-images.sh as outpost/workload-exit:dev, which puts the
# static binary into the build context. No shell or libc in the image: exec
# probes and commands can only run the binary itself.
FROM scratch
COPY outpost-exit /usr/bin/outpost-exit
ENTRYPOINT ["/usr/bin/outpost-exit"]
