# outpost-hog: grows memory, disk and task use at a chosen rate, then holds.
# Test workload for Outpost's scenario tests, built by
# images/workloads/build-images.sh as outpost/workload-hog:dev, which puts the
# static binary into the build context. No shell or libc in the image: exec
# probes and commands can only run the binary itself.
FROM scratch
COPY outpost-hog /usr/bin/outpost-hog
ENTRYPOINT ["/usr/bin/outpost-hog"]
