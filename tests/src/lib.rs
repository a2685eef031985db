//! End-to-end tests: build the image, boot it in QEMU, drive it through its console, API and QMP.
