//! What machine a bench run measured: cores, memory, kernel and the file system it wrote to.

use std::path::Path;

use super::report::Machine;

/// The machine this process runs on, with the file system of `dir`; `None` where Linux's
/// `/proc` cannot be read.
pub fn collect(dir: &Path) -> Option<Machine> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let memory_gib = mem_total_kib(&meminfo)? as f64 / (1024.0 * 1024.0);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let kernel = format!("Linux {}", release.trim());
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let file_system = file_system(&mounts, &dir.canonicalize().ok()?)?;
    Some(Machine { cores, memory_gib, kernel, file_system })
}

/// `MemTotal` of `/proc/meminfo`, KiB.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The type of the file system of the longest mount point of `/proc/self/mounts` holding `path`.
fn file_system(mounts: &str, path: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (_device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            // Spaces and other bytes in mount points are written as octal escapes.
            let point = point.replace("\\040", " ");
            path.starts_with(&point).then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_the_file_system_of_the_longest_mount_point() {
        assert_eq!(mem_total_kib("MemFree: 5 kB\nMemTotal:  24567896 kB\n"), Some(24_567_896));
        assert_eq!(mem_total_kib("MemFree: 5 kB\n"), None);
        let mounts = "/dev/vda1 / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n/dev/vdb /work/my\\040disk xfs rw 0 0\n";
        assert_eq!(file_system(mounts, Path::new("/tmp/x")).as_deref(), Some("tmpfs"));
        assert_eq!(file_system(mounts, Path::new("/work/my disk/t")).as_deref(), Some("xfs"));
        assert_eq!(file_system(mounts, Path::new("/tmpx")).as_deref(), Some("ext4"));
    }

    #[test]
    fn this_machine_can_be_read() {
        let m = collect(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("a Linux /proc");
        assert!(m.cores >= 1 && m.memory_gib > 0.0 && m.kernel.starts_with("Linux "), "{m:?}");
        assert!(!m.file_system.is_empty());
    }
}
