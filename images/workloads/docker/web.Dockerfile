# outpost-http on port 80: the workload for manifests written for a web
# server on port 80 (the Deployment of the Kubernetes getting-started seed).
# Built by images/workloads/build-images.sh as outpost/workload-web:dev.
FROM scratch
COPY outpost-http /usr/bin/outpost-http
ENV PORT=80
EXPOSE 80
ENTRYPOINT ["/usr/bin/outpost-http"]
