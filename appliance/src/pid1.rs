//! PID-1 duties when the appliance boots as /init of its own image: mounts, modules, data disk,
//! reaping, signals, watchdog, clean power-off.
