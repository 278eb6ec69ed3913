//! Full sync of 100,000 users and 1,000 groups from a real slapd, beside the floor measured in
//! the same run: a plain paged `ldapsearch` dump of the same entries. Then a delta of 100
//! changed users. Run: `cargo bench -p idbridge-ldap --bench full_sync` (env `BENCH_USERS`,
//! `BENCH_GROUPS` to scale, `BENCH_TRACKING=timestamp|sync|auto` for the delta kind,
//! `BENCH_SYNCPROV=on|sessionlog|off` for the server). Not run by `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// libc calls on peer processes and C buffers of the test.
#![allow(unsafe_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufWriter, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use common::{base_ldif, Fx, Slapd, SlapdSettings, SyncProv, ADMIN_DN, ADMIN_PW, SUFFIX};
use idbridge_ldap::{NoProgress, SyncKind, Syncer};

/// The allocator the `idbridge` binary uses (crates/server/src/main.rs), so the figures are
/// the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU seconds this process has used (user + system): beside a phase's wall time it shows
/// whether our side or the server is the bottleneck.
fn cpu_secs() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn uuid(kind: u32, i: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{i:012x}")
}

fn ldapsearch_dump(url: &str, base: &str, filter: &str) -> (f64, usize) {
    let t = Instant::now();
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            url,
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PW,
            "-b",
            base,
            "-E",
            "pr=500/noprompt",
            filter,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("ldapsearch");
    assert!(out.status.success(), "ldapsearch failed");
    let n = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"dn: "))
        .count();
    (t.elapsed().as_secs_f64(), n)
}

fn main() {
    let users = env_or("BENCH_USERS", 100_000);
    let groups = env_or("BENCH_GROUPS", 1_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let ldif_path = tmp.path().join("data.ldif");
    {
        let f = std::fs::File::create(&ldif_path).expect("ldif");
        let mut w = BufWriter::new(f);
        w.write_all(base_ldif().as_bytes()).expect("write");
        // Fixed entryUUIDs keep runs comparable; slapadd adds entryCSN and timestamps.
        for i in 0..users {
            write!(
                w,
                "dn: uid=user{i:06},ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: user{i:06}\n\
                 cn: User {i}\ngivenName: User\nsn: Number{i}\nmail: user{i:06}@example.test\n\
                 title: Engineer\nentryUUID: {}\n\n",
                uuid(1, i)
            )
            .expect("write");
        }
        for g in 0..groups {
            write!(
                w,
                "dn: cn=group{g:04},ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: group{g:04}\n\
                 entryUUID: {}\n",
                uuid(2, g)
            )
            .expect("write");
            let mut any = false;
            for i in (g..users).step_by(groups.max(1)) {
                writeln!(w, "member: uid=user{i:06},ou=People,{SUFFIX}").expect("write");
                any = true;
            }
            if !any {
                writeln!(w, "member: {ADMIN_DN}").expect("write");
            }
            writeln!(w).expect("write");
        }
    }
    let t = Instant::now();
    // BENCH_SYNCPROV=sessionlog adds `syncprov-sessionlog` (deltas then get a delete phase
    // instead of a present phase naming every entry).
    let syncprov = match std::env::var("BENCH_SYNCPROV").as_deref() {
        Ok("sessionlog") => SyncProv::SessionLog,
        Ok("off") => SyncProv::Off,
        _ => SyncProv::On,
    };
    println!("syncprov: {syncprov:?}");
    let slapd = Slapd::start_loaded(&ldif_path, syncprov).expect("slapd");
    println!(
        "slapadd + start: {users} users, {groups} groups in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The floor: a plain paged ldapsearch of the same entries (users, then groups), the best
    // of three (the machine's noise between runs is large; the best dump is the strictest
    // floor to compare with).
    let mut floor = f64::INFINITY;
    for _ in 0..3 {
        let (tu, nu) = ldapsearch_dump(
            slapd.url(),
            &format!("ou=People,{SUFFIX}"),
            "(objectClass=inetOrgPerson)",
        );
        let (tg, ng) = ldapsearch_dump(
            slapd.url(),
            &format!("ou=Groups,{SUFFIX}"),
            "(objectClass=groupOfNames)",
        );
        println!("ldapsearch paged dump: {nu} users {tu:.2}s + {ng} groups {tg:.2}s");
        floor = floor.min(tu + tg);
    }
    println!("floor (best of 3 dumps): {floor:.2}s");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fx = Fx::new();
    let mut settings = slapd.settings();
    settings.page_size = 500;
    settings.timeouts.operation_secs = 120;
    // BENCH_TRACKING=timestamp|sync|auto (default: the flavor's, auto on OpenLDAP).
    settings.change_tracking = match std::env::var("BENCH_TRACKING").as_deref() {
        Ok("timestamp") => Some(idbridge_ldap::ChangeTracking::Timestamp),
        Ok("sync") => Some(idbridge_ldap::ChangeTracking::Sync),
        Ok("auto") => Some(idbridge_ldap::ChangeTracking::Auto),
        _ => None,
    };
    println!("change tracking: {:?}", settings.change_tracking());
    let src = fx.ldap_dir(settings);
    let syncer = Syncer::new(fx.engine.clone());

    let t = Instant::now();
    let rec = rt
        .block_on(syncer.run(&src, SyncKind::Full, Arc::new(NoProgress)))
        .expect("full sync");
    let full = t.elapsed().as_secs_f64();
    println!(
        "initial full sync (read {:.2}s + apply, {} users created, {} memberships): {full:.2}s = {:.2}x floor",
        rec.read_ms as f64 / 1000.0,
        rec.created,
        rec.memberships_changed,
        full / floor
    );

    // Steady state (what a scheduled full sync of an unchanged tree costs), three times;
    // the median is the figure.
    let mut steady = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let cpu = cpu_secs();
        let rec = rt
            .block_on(syncer.run(&src, SyncKind::Full, Arc::new(NoProgress)))
            .expect("full sync 2");
        let took = t.elapsed().as_secs_f64();
        println!(
            "steady-state full sync (read {:.2}s + apply, nothing changed, {} events, {:.2} CPU-s here): {took:.2}s = {:.2}x floor",
            rec.read_ms as f64 / 1000.0,
            rec.events,
            cpu_secs() - cpu,
            took / floor
        );
        steady.push(took);
    }
    steady.sort_by(f64::total_cmp);
    println!(
        "steady-state full sync, median of 3: {:.2}s = {:.2}x floor (goal: within 1.5x)",
        steady[1],
        steady[1] / floor
    );

    // The cost of seeding RFC 4533 cookies, A/B in the same process (the machine's noise
    // between runs is larger than the difference): steady-state full syncs alternating
    // timestamp and the configured tracking (which then finds no cookies to keep and seeds
    // new ones), then the seeding search alone. The steady-state line above kept the
    // cookies of the initial sync, as a scheduled full sync keeps a delta's.
    if src.settings.change_tracking() != idbridge_ldap::ChangeTracking::Timestamp {
        let mut ts = src.clone();
        ts.settings.change_tracking = Some(idbridge_ldap::ChangeTracking::Timestamp);
        for _ in 0..2 {
            for (label, s) in [("timestamp", &ts), ("sync", &src)] {
                let t = Instant::now();
                let cpu = cpu_secs();
                let rec = rt
                    .block_on(syncer.run(s, SyncKind::Full, Arc::new(NoProgress)))
                    .expect("full sync a/b");
                println!(
                    "  a/b steady-state full sync, {label}: read {:.2}s, total {:.2}s, {:.2} CPU-s here",
                    rec.read_ms as f64 / 1000.0,
                    t.elapsed().as_secs_f64(),
                    cpu_secs() - cpu
                );
            }
        }
        let t = Instant::now();
        rt.block_on(async {
            let mut c = idbridge_ldap::client::Client::connect(&src.settings)
                .await
                .expect("connect");
            c.sync_start(
                &format!("ou=People,{SUFFIX}"),
                "(objectClass=inetOrgPerson)",
                &["1.1".to_owned()],
                None,
                false,
            )
            .await
            .expect("sync start")
            .finish()
            .await
            .expect("seed");
        });
        println!(
            "  cookie seeding search alone (users): {:.2}s",
            t.elapsed().as_secs_f64()
        );
    }

    // Delta: 100 changed users out of all of them.
    let mut ldif = String::new();
    for i in (0..users).step_by((users / 100).max(1)).take(100) {
        ldif.push_str(&format!(
            "dn: uid=user{i:06},ou=People,{SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Staff Engineer\n\n"
        ));
    }
    slapd.modify(&ldif, false).expect("ldapmodify");
    let t = Instant::now();
    let rec = rt
        .block_on(syncer.run(&src, SyncKind::Delta, Arc::new(NoProgress)))
        .expect("delta");
    println!(
        "delta sync: {} users read (read {:.3}s), {} applied in {:.3}s",
        rec.users_read,
        rec.read_ms as f64 / 1000.0,
        rec.updated,
        t.elapsed().as_secs_f64()
    );
}
