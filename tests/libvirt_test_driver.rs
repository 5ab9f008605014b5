//! The libvirt backend against libvirt's in-process `test:///default` driver (no daemon,
//! no KVM): networks, the storage pool and volumes (metadata only), domains, state
//! mapping, idempotent delete, ownership checks and error mapping.
//!
//! All connections of one process share the test driver's state while any is open, so
//! each test uses its own names and subnets and tests may run in parallel. The test
//! driver cannot upload into volumes (`virStorageVolUpload` is unsupported), so domains
//! are defined here from the backend's own XML where `create` would upload a seed.
#![cfg(feature = "libvirt")]
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::time::Duration;

use kubelab::driver::libvirt::{self, LibvirtDriver, POOL};
use kubelab::driver::{
    Accel, AccelPolicy, Action, DhcpHost, DiskSpec, Driver, DriverError, NetworkKind, NetworkSpec,
    Nic, Object, Owner, StopMode, VmSpec, VmState, bridge_name, network_names,
};
use kubelab::net::{Ipv4Cidr, MacAddr};
use virt::connect::Connect;
use virt::storage_vol::StorageVol;

const URI: &str = "test:///default";
/// The home most tests act for, and another one sharing the hypervisor.
const HOME: &str = "0123456789abcdef";
const OTHER_HOME: &str = "fedcba9876543210";

/// The owner marker of `profile` in the home `HOME`.
fn owner(profile: &str) -> Owner {
    owner_in(HOME, profile)
}

fn owner_in(home: &str, profile: &str) -> Owner {
    Owner::new(home.parse().unwrap(), &profile.parse().unwrap())
}

fn driver() -> LibvirtDriver {
    LibvirtDriver::connect(URI)
        .unwrap()
        .with_pool_path("/kubelab-pool")
        .with_stop_timeout(Duration::from_secs(5))
}

/// A second, raw connection for setting up and inspecting state behind the driver's back.
fn raw() -> Connect {
    Connect::open(Some(URI)).unwrap()
}

fn net_spec(profile: &str, kind: NetworkKind, cidr: &str, nodes: &[&str]) -> NetworkSpec {
    let (host_only, nat) = network_names(profile);
    let name = if kind == NetworkKind::Nat { nat } else { host_only };
    let cidr: Ipv4Cidr = cidr.parse().unwrap();
    let hosts = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| DhcpHost {
            mac: MacAddr::derive(profile, n, 1),
            ip: cidr.node_ip(i as u32).unwrap(),
            name: (*n).to_owned(),
        })
        .collect();
    NetworkSpec { bridge: bridge_name(&name), name, owner: owner(profile), kind, cidr, hosts }
}

fn vm_spec(profile: &str, name: &str) -> VmSpec {
    let (host_only, nat) = network_names(profile);
    VmSpec {
        name: name.into(),
        owner: owner(profile),
        accel: Accel::Tcg,
        cpus: 1,
        memory_mib: 512,
        disk: DiskSpec::Overlay {
            base_image: "/nonexistent/base.qcow2".into(),
            base_id: format!("{profile}-base"),
            size_gib: 5,
        },
        seed_iso: "/nonexistent/seed.iso".into(),
        serial_log: format!("/tmp/{name}.log").into(),
        nat: Nic { network: nat, mac: MacAddr::derive(profile, name, 0) },
        host_only: Nic { network: host_only, mac: MacAddr::derive(profile, name, 1) },
    }
}

/// Defines the domain from the backend's XML, as `create` does after its uploads.
fn define(vm: &VmSpec) {
    raw().define_domain_xml(&libvirt::domain_xml(vm, POOL, None)).unwrap();
}

fn network_xml(name: &str) -> String {
    raw().lookup_network_by_name(name).unwrap().xml_desc(0).unwrap()
}

#[test]
fn ensure_network_creates_is_idempotent_and_self_heals() {
    let d = driver();
    let net = net_spec("t-heal", NetworkKind::HostOnly, "192.168.201.0/24", &["t-heal"]);
    d.ensure_network(&net).unwrap();
    d.ensure_network(&net).unwrap();
    let conn = raw();
    let live = conn.lookup_network_by_name(&net.name).unwrap();
    assert!(live.is_active().unwrap());
    assert!(!live.autostart().unwrap());
    assert!(network_xml(&net.name).contains("<ip address='192.168.201.1' prefix='24'>"));

    live.destroy().unwrap();
    d.ensure_network(&net).unwrap();
    assert!(live.is_active().unwrap(), "an inactive network is started again");

    live.destroy().unwrap();
    live.undefine().unwrap();
    d.ensure_network(&net).unwrap();
    assert!(conn.lookup_network_by_name(&net.name).unwrap().is_active().unwrap(), "recreated");
    assert!(d.used_subnets().unwrap().contains(&"192.168.201.0/24".parse().unwrap()));
    d.delete_network(&net.name, &net.owner).unwrap();
}

#[test]
fn ensure_network_syncs_dhcp_reservations_live() {
    let d = driver();
    let one = net_spec("t-dhcp", NetworkKind::HostOnly, "192.168.202.0/24", &["t-dhcp"]);
    d.ensure_network(&one).unwrap();
    let two =
        net_spec("t-dhcp", NetworkKind::HostOnly, "192.168.202.0/24", &["t-dhcp", "t-dhcp-m02"]);
    d.ensure_network(&two).unwrap();
    let xml = network_xml(&two.name);
    assert!(
        xml.contains(&format!(
            "<host mac='{}' name='t-dhcp-m02' ip='192.168.202.11'/>",
            two.hosts[1].mac
        )),
        "{xml}"
    );
    d.ensure_network(&one).unwrap();
    assert!(!network_xml(&one.name).contains("t-dhcp-m02"), "a removed node's reservation goes");
    d.delete_network(&one.name, &one.owner).unwrap();
}

#[test]
fn nat_network_forwards_and_conflicts_are_refused() {
    let d = driver();
    let nat = net_spec("t-conf", NetworkKind::Nat, "192.168.203.0/24", &[]);
    d.ensure_network(&nat).unwrap();
    assert!(network_xml(&nat.name).contains("<forward mode='nat'"));

    let moved = NetworkSpec { cidr: "192.168.204.0/24".parse().unwrap(), ..nat.clone() };
    let err = d.ensure_network(&moved).unwrap_err();
    assert!(matches!(err, DriverError::NetworkConflict { .. }), "{err:?}");

    // libvirt's `default` network holds 192.168.122.0/24 in the test driver.
    let overlapping = net_spec("t-conf", NetworkKind::HostOnly, "192.168.122.0/24", &[]);
    let err = d.ensure_network(&overlapping).unwrap_err();
    assert!(
        matches!(err, DriverError::NetworkConflict { ref found, .. } if found.contains("default")),
        "{err:?}"
    );
    d.delete_network(&nat.name, &nat.owner).unwrap();
    d.delete_network(&nat.name, &nat.owner).unwrap();
}

#[test]
fn foreign_networks_are_never_touched() {
    let d = driver();
    let conn = raw();
    let xml = "<network><name>kubelab-t-foreign</name><bridge name='kltforeign'/>\
               <ip address='192.168.205.1' prefix='24'/></network>";
    conn.define_network_xml(xml).unwrap();
    let spec = net_spec("t-foreign", NetworkKind::HostOnly, "192.168.205.0/24", &[]);
    assert!(matches!(d.ensure_network(&spec), Err(DriverError::ForeignNetwork { .. })));
    assert!(matches!(
        d.delete_network("kubelab-t-foreign", &spec.owner),
        Err(DriverError::ForeignNetwork { .. })
    ));
    assert!(matches!(
        d.delete_network("default", &spec.owner),
        Err(DriverError::ForeignNetwork { .. })
    ));
    assert!(conn.lookup_network_by_name("kubelab-t-foreign").is_ok());
    assert!(conn.lookup_network_by_name("default").unwrap().is_active().unwrap());
    d.delete_network("kubelab-t-missing", &spec.owner).unwrap();
    conn.lookup_network_by_name("kubelab-t-foreign").unwrap().undefine().unwrap();
}

#[test]
fn create_builds_an_overlay_and_cleans_up_a_failed_upload() {
    let d = driver();
    let files = tempfile::tempdir().unwrap();
    let (base_image, seed_iso) = (files.path().join("base.qcow2"), files.path().join("seed.iso"));
    std::fs::write(&base_image, b"QFI\xfb").unwrap();
    std::fs::write(&seed_iso, [0u8; 4096]).unwrap();
    let with_files = |mut vm: VmSpec| {
        vm.seed_iso = seed_iso.clone();
        if let DiskSpec::Overlay { base_image: b, .. } = &mut vm.disk {
            *b = base_image.clone();
        }
        vm
    };
    let vm = with_files(vm_spec("t-vol", "t-vol"));
    // The test driver cannot upload: stand in a base volume as if uploaded earlier.
    let pool = {
        let failed = d.create(&with_files(vm_spec("t-vol", "t-vol-probe"))).unwrap_err();
        assert!(
            matches!(failed, DriverError::Backend { action: Action::UploadVolume, .. }),
            "{failed:?}"
        );
        raw().lookup_storage_pool_by_name(POOL).unwrap()
    };
    assert!(
        pool.lookup_storage_vol_by_name("base-t-vol-base.qcow2").is_err(),
        "failed upload removed"
    );
    let base = "<volume><name>base-t-vol-base.qcow2</name><capacity>1048576</capacity>\
                <target><format type='qcow2'/></target></volume>";
    StorageVol::create_xml(&pool, base, 0).unwrap();

    let err = d.create(&vm).unwrap_err();
    assert!(
        matches!(err, DriverError::Backend { action: Action::UploadVolume, ref object, .. } if object == "node-0123456789abcdef-t-vol-seed.iso")
    );
    let overlay = pool
        .lookup_storage_vol_by_name("node-0123456789abcdef-t-vol.qcow2")
        .unwrap()
        .xml_desc(0)
        .unwrap();
    assert!(overlay.contains("<compat>1.1</compat>"), "{overlay}");
    assert!(overlay.contains("<path>/kubelab-pool/base-t-vol-base.qcow2</path>"), "{overlay}");
    assert!(overlay.contains("<capacity unit='bytes'>5368709120</capacity>"), "{overlay}");
    assert!(pool.lookup_storage_vol_by_name("node-0123456789abcdef-t-vol-seed.iso").is_err());

    d.delete("t-vol", &vm.owner).unwrap();
    assert!(
        pool.lookup_storage_vol_by_name("node-0123456789abcdef-t-vol.qcow2").is_err(),
        "leftover disk removed"
    );
    d.delete("t-vol", &vm.owner).unwrap();
    d.delete_image("t-vol-base").unwrap();
    assert!(pool.lookup_storage_vol_by_name("base-t-vol-base.qcow2").is_err());
    d.delete_image("t-vol-base").unwrap();
}

#[test]
fn domain_lifecycle_and_state_mapping() {
    let d = driver();
    let vm = vm_spec("t-dom", "t-dom");
    let host_only = net_spec("t-dom", NetworkKind::HostOnly, "192.168.206.0/24", &["t-dom"]);
    d.ensure_network(&host_only).unwrap();
    d.ensure_network(&net_spec("t-dom", NetworkKind::Nat, "192.168.207.0/24", &[])).unwrap();
    assert_eq!(d.state("t-dom").unwrap(), VmState::Missing);
    define(&vm);
    d.create(&vm).unwrap(); // already exists: Ok, nothing uploaded
    assert_eq!(d.state("t-dom").unwrap(), VmState::Stopped);
    assert_eq!(d.ip("t-dom").unwrap(), None);

    d.start("t-dom", &vm.owner).unwrap();
    d.start("t-dom", &vm.owner).unwrap();
    assert_eq!(d.state("t-dom").unwrap(), VmState::Running);
    // The test driver invents a lease per interface; it must be the host-only NIC's.
    let ip = d.ip("t-dom").unwrap();
    assert!(matches!(ip, Some(std::net::IpAddr::V4(v4)) if host_only.cidr.contains(v4)), "{ip:?}");
    let dom = raw().lookup_domain_by_name("t-dom").unwrap();
    dom.suspend().unwrap();
    assert_eq!(d.state("t-dom").unwrap(), VmState::Paused);
    dom.resume().unwrap();

    d.stop("t-dom", &vm.owner, StopMode::Graceful).unwrap();
    assert_eq!(d.state("t-dom").unwrap(), VmState::Stopped);
    d.stop("t-dom", &vm.owner, StopMode::Graceful).unwrap();
    d.start("t-dom", &vm.owner).unwrap();
    d.stop("t-dom", &vm.owner, StopMode::Force).unwrap();
    assert_eq!(d.state("t-dom").unwrap(), VmState::Stopped);

    d.start("t-dom", &vm.owner).unwrap();
    d.delete("t-dom", &vm.owner).unwrap();
    assert_eq!(d.state("t-dom").unwrap(), VmState::Missing);
    d.delete("t-dom", &vm.owner).unwrap();
    d.stop("t-dom", &vm.owner, StopMode::Graceful).unwrap();
    assert!(matches!(d.start("t-dom", &vm.owner), Err(DriverError::NoSuchVm { .. })));
    for name in [host_only.name, network_names("t-dom").1] {
        d.delete_network(&name, &vm.owner).unwrap();
    }
}

#[test]
fn foreign_domains_and_macs_are_refused() {
    let d = driver();
    // The test driver's own `test` domain has no kubelab marker.
    let mine = vm_spec("t-own", "t-own");
    let o = &mine.owner;
    for result in [d.delete("test", o), d.stop("test", o, StopMode::Force), d.start("test", o)] {
        assert!(matches!(result, Err(DriverError::ForeignVm { owner: None, .. })), "{result:?}");
    }
    assert_eq!(d.state("test").unwrap(), VmState::Running, "left alone");

    define(&mine);
    let other_profile = VmSpec { owner: owner("t-other"), ..mine.clone() };
    let err = d.create(&other_profile).unwrap_err();
    assert!(
        matches!(err, DriverError::ForeignVm { owner: Some(ref o), .. } if *o == mine.owner.node("t-own")),
        "{err:?}"
    );

    let clash = VmSpec { name: "t-own-clash".into(), ..mine.clone() };
    let err = d.create(&clash).unwrap_err();
    assert!(
        matches!(err, DriverError::MacConflict { ref other, .. } if other == "t-own"),
        "{err:?}"
    );
    d.delete("t-own", &mine.owner).unwrap();
}

#[test]
fn check_host_falls_back_to_tcg_without_kvm_guests() {
    // The test driver offers only domain type `test`, never `kvm`.
    let d = driver();
    let report = d.check_host(AccelPolicy::Auto).unwrap();
    assert_eq!(report.accel, Accel::Tcg);
    assert!(report.warnings.iter().any(|w| w.reason.id == "HOST_KVM_UNAVAILABLE"), "{report:?}");
    let err = d.check_host(AccelPolicy::RequireKvm).unwrap_err();
    assert!(matches!(err, DriverError::KvmUnavailable { .. }), "{err:?}");
    let top = kubelab::Error::from(err);
    assert_eq!(kubelab::reason::reason(&top).id, "HOST_KVM_UNAVAILABLE");
}

#[test]
fn picked_subnets_avoid_routes_and_libvirt_networks() {
    let d = driver();
    let (taken, warning) = kubelab::driver::taken_subnets(&d, None).unwrap();
    assert!(warning.is_none(), "kvm2 reads the routes or fails");
    let picked = kubelab::net::choose_subnets(&taken, 2).unwrap();
    assert!(taken.contains(&"192.168.122.0/24".parse().unwrap()), "{taken:?}");
    assert_eq!(picked.len(), 2);
    assert!(!picked[0].overlaps(&picked[1]));
    for p in &picked {
        assert!(!taken.iter().any(|t| t.overlaps(p)), "{p} overlaps {taken:?}");
    }
}

#[test]
fn connection_errors_are_typed() {
    let err =
        LibvirtDriver::connect("qemu+unix:///system?socket=/nonexistent/kubelab.sock").unwrap_err();
    assert!(matches!(err, DriverError::Unreachable { .. }), "{err:?}");
    // The test driver loads that file as its initial state: a failure, not a daemon issue.
    let err = LibvirtDriver::connect("test:///nonexistent/kubelab-config.xml").unwrap_err();
    assert!(matches!(err, DriverError::Connect { .. }), "{err:?}");
    let top = kubelab::Error::from(
        LibvirtDriver::connect("qemu+unix:///system?socket=/nonexistent/s").unwrap_err(),
    );
    assert_eq!(kubelab::reason::reason(&top).id, "HOST_LIBVIRT_UNREACHABLE");
}

/// The golden files (which the unit tests compare the builders with) are valid for
/// libvirt's own RelaxNG schemas. Needs `virt-xml-validate` (libvirt-clients).
#[test]
fn golden_xml_validates_against_libvirt_schemas() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libvirt");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let schema = match name.split(['-', '.']).next().unwrap() {
            "domain" => "domain",
            "network" => "network",
            "pool" => "storagepool",
            "volume" => "storagevol",
            _ => continue,
        };
        let tool = kubelab::process::Tool::new("virt-xml-validate");
        tool.run([path.as_os_str(), schema.as_ref()]).unwrap_or_else(|e| panic!("{name}: {e}"));
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} golden files found in {}", dir.display());
}

fn reason_id(err: DriverError) -> &'static str {
    let err = kubelab::Error::from(err);
    kubelab::reason::reason(&err).id
}

/// Issue "Never touch what is not yours": a second home with the same profile name wants
/// the same VM and network names. Every action of the second home on them is refused
/// with the owner named, and the first home's objects are left as they were.
#[test]
fn another_homes_objects_of_the_same_names_are_refused_and_untouched() {
    let d = driver();
    let mine = vm_spec("t-homes", "t-homes");
    let host_only = net_spec("t-homes", NetworkKind::HostOnly, "192.168.208.0/24", &["t-homes"]);
    let nat = net_spec("t-homes", NetworkKind::Nat, "192.168.209.0/24", &[]);
    d.ensure_network(&host_only).unwrap();
    d.ensure_network(&nat).unwrap();
    define(&mine);
    d.start("t-homes", &mine.owner).unwrap();
    let before = raw().lookup_domain_by_name("t-homes").unwrap().xml_desc(0).unwrap();

    let theirs = owner_in(OTHER_HOME, "t-homes");
    let their_net = NetworkSpec { owner: theirs.clone(), ..host_only.clone() };
    for err in [
        d.check_network(&their_net).unwrap_err(),
        d.ensure_network(&their_net).unwrap_err(),
        d.delete_network(&host_only.name, &theirs).unwrap_err(),
    ] {
        assert!(
            matches!(err, DriverError::ForeignNetwork { owner: Some(ref o), .. } if *o == host_only.owner),
            "{err:?}"
        );
        assert!(err.to_string().contains("belongs to kubelab home 0123456789abcdef"), "{err}");
        assert_eq!(reason_id(err), "DRV_NET_NOT_KUBELAB");
    }
    let their_vm = VmSpec { owner: theirs.clone(), ..mine.clone() };
    for err in [
        d.check_vm("t-homes", &theirs).unwrap_err(),
        d.create(&their_vm).unwrap_err(),
        d.start("t-homes", &theirs).unwrap_err(),
        d.stop("t-homes", &theirs, StopMode::Force).unwrap_err(),
        d.delete("t-homes", &theirs).unwrap_err(),
    ] {
        assert!(
            matches!(err, DriverError::ForeignVm { owner: Some(ref o), .. } if *o == mine.owner.node("t-homes")),
            "{err:?}"
        );
        assert_eq!(reason_id(err), "DRV_VM_NOT_KUBELAB");
    }
    // Another profile of the same home, and a marker naming another node, are refused too.
    assert!(d.check_vm("t-homes", &owner("t-homes-x")).is_err());
    let renamed = before.replace("<name>t-homes</name>", "<name>t-homes-m02</name>");
    let renamed = renamed.replace(&mine.nat.mac.to_string(), "52:54:00:00:00:01");
    let renamed = renamed.replace(&mine.host_only.mac.to_string(), "52:54:00:00:00:02");
    let renamed = renamed.lines().filter(|l| !l.contains("<uuid>")).collect::<Vec<_>>().join("\n");
    raw().define_domain_xml(&renamed).unwrap();
    let err = d.delete("t-homes-m02", &mine.owner).unwrap_err();
    assert!(
        matches!(err, DriverError::ForeignVm { owner: Some(ref o), .. } if o.node.as_deref() == Some("t-homes")),
        "{err:?}"
    );
    raw().lookup_domain_by_name("t-homes-m02").unwrap().undefine().unwrap();

    assert_eq!(d.state("t-homes").unwrap(), VmState::Running, "left alone");
    let after = raw().lookup_domain_by_name("t-homes").unwrap().xml_desc(0).unwrap();
    assert_eq!(after, before);
    assert!(raw().lookup_network_by_name(&host_only.name).unwrap().is_active().unwrap());

    // The first home still deletes its own.
    d.delete("t-homes", &mine.owner).unwrap();
    assert_eq!(d.state("t-homes").unwrap(), VmState::Missing);
    d.delete_network(&host_only.name, &host_only.owner).unwrap();
    d.delete_network(&nat.name, &nat.owner).unwrap();
    assert!(raw().lookup_network_by_name(&host_only.name).is_err());
}

/// The second home's `up` (the real operation) is refused by the ownership check before
/// it creates or records anything: no network, volume or VM of its own, no profile left.
#[test]
fn up_in_a_second_home_is_refused_before_anything_is_created() {
    let d = driver();
    let mine = vm_spec("t-up", "t-up");
    let host_only = net_spec("t-up", NetworkKind::HostOnly, "192.168.210.0/24", &["t-up"]);
    d.ensure_network(&host_only).unwrap();
    d.ensure_network(&net_spec("t-up", NetworkKind::Nat, "192.168.211.0/24", &[])).unwrap();
    define(&mine);
    d.start("t-up", &mine.owner).unwrap();
    // Counted by name: the other tests define and remove their own objects meanwhile.
    let ours = |names: Vec<String>| names.into_iter().filter(|n| n.contains("t-up")).count();
    let networks =
        || ours(raw().list_networks().unwrap()) + ours(raw().list_defined_networks().unwrap());
    let domains =
        || ours(raw().list_all_domains(0).unwrap().iter().map(|d| d.name().unwrap()).collect());
    let (networks_before, domains_before) = (networks(), domains());

    let files = tempfile::tempdir().unwrap();
    let image = files.path().join("base.qcow2");
    std::fs::write(&image, b"QFI\xfb").unwrap();
    let home = kubelab::home::Home::new(files.path().join("home-b"));
    let profile = kubelab::profile::Profile::new(&home, "t-up".parse().unwrap());
    let opts = kubelab::ops::up::UpOptions {
        driver: Some(kubelab::driver::DriverKind::Kvm2),
        libvirt_uri: Some(URI.into()),
        image: Some(image.to_string_lossy().into_owned()),
        bootstrapper: Some(kubelab::bootstrap::BootstrapperKind::None),
        ssh_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let err = kubelab::ops::up::up(&home, &profile, &opts, &()).unwrap_err();
    let kubelab::Error::Driver(DriverError::ForeignNetwork { ref owner, .. }) = err else {
        panic!("{err:?}")
    };
    assert_eq!(owner.as_ref(), Some(&host_only.owner));
    assert_eq!(kubelab::reason::reason(&err).id, "DRV_NET_NOT_KUBELAB");
    assert_ne!(home.id().unwrap().to_string(), HOME, "a home of its own");
    assert!(!profile.dir().exists(), "nothing of the refused profile is left");
    assert_eq!((networks(), domains()), (networks_before, domains_before));
    if let Ok(pool) = raw().lookup_storage_pool_by_name(POOL) {
        let b = home.id().unwrap().to_string();
        assert!(
            !pool.list_volumes().unwrap().iter().any(|v| v.contains(&b)),
            "no volume of home b"
        );
    }
    assert_eq!(d.state("t-up").unwrap(), VmState::Running, "home a's VM untouched");

    d.delete("t-up", &mine.owner).unwrap();
    for name in [host_only.name, network_names("t-up").1] {
        d.delete_network(&name, &mine.owner).unwrap();
    }
}

/// `delete` removes a shared base volume (or boot ISO) only when no volume's backing
/// store and no domain's disk, of any home, still uses it.
#[test]
fn base_volume_is_kept_while_another_homes_overlay_uses_it() {
    let d = driver();
    let files = tempfile::tempdir().unwrap();
    let base_image = files.path().join("base.qcow2");
    std::fs::write(&base_image, b"QFI\xfb").unwrap();
    let mut probe = vm_spec("t-share", "t-share-probe");
    probe.disk = DiskSpec::Overlay { base_image, base_id: "t-share-probe".into(), size_gib: 1 };
    probe.seed_iso = files.path().join("seed.iso");
    // The test driver cannot upload: the failed upload still makes the pool.
    assert!(d.create(&probe).is_err());
    let pool = raw().lookup_storage_pool_by_name(POOL).unwrap();
    let vol = |name: &str, backing: &str| {
        let backing = if backing.is_empty() {
            String::new()
        } else {
            format!("<backingStore><path>{backing}</path><format type='qcow2'/></backingStore>")
        };
        let xml = format!(
            "<volume><name>{name}</name><capacity>1048576</capacity>\
             <target><format type='qcow2'/></target>{backing}</volume>"
        );
        StorageVol::create_xml(&pool, &xml, 0).unwrap()
    };
    let exists = |name: &str| pool.lookup_storage_vol_by_name(name).is_ok();
    vol("base-t-share.qcow2", "");
    let overlay =
        vol(&format!("node-{OTHER_HOME}-t-share.qcow2"), "/kubelab-pool/base-t-share.qcow2");
    d.delete_image("t-share").unwrap();
    assert!(exists("base-t-share.qcow2"), "another home's overlay still uses it");
    overlay.delete(0).unwrap();
    d.delete_image("t-share").unwrap();
    assert!(!exists("base-t-share.qcow2"), "unused: removed");

    // A boot ISO is used by domains directly, as a cdrom.
    vol("iso-t-share.iso", "");
    let mut booting = vm_spec("t-share", "t-share");
    booting.disk =
        DiskSpec::IsoWithDataDisk { iso: "/x.iso".into(), iso_id: "t-share".into(), size_gib: 1 };
    define(&booting);
    d.delete_image("t-share").unwrap();
    assert!(exists("iso-t-share.iso"), "a domain still boots it");
    d.delete("t-share", &booting.owner).unwrap();
    d.delete_image("t-share").unwrap();
    assert!(!exists("iso-t-share.iso"));
}

#[test]
fn owned_lists_exactly_what_carries_the_profiles_marker() {
    let d = driver();
    let ours = owner("t-own");
    let host_only = net_spec("t-own", NetworkKind::HostOnly, "192.168.214.0/24", &[]);
    let nat = net_spec("t-own", NetworkKind::Nat, "192.168.215.0/24", &[]);
    let mut other_profile = net_spec("t-own2", NetworkKind::HostOnly, "192.168.216.0/24", &[]);
    other_profile.owner = owner("t-own2");
    for net in [&host_only, &nat, &other_profile] {
        d.ensure_network(net).unwrap();
    }
    define(&vm_spec("t-own", "t-own"));
    define(&vm_spec("t-own", "t-own-m02"));
    // Another home's node of a profile of the same name, and this home's other profile.
    let mut foreign = vm_spec("t-own", "t-own-m03");
    foreign.owner = owner_in(OTHER_HOME, "t-own");
    define(&foreign);
    let mut other = vm_spec("t-own", "t-own2");
    other.owner = owner("t-own2");
    define(&other);

    let mut owned = d.owned(&ours).unwrap();
    owned.vms.sort();
    owned.networks.sort();
    assert_eq!(owned.vms, ["t-own", "t-own-m02"]);
    assert_eq!(owned.networks, [host_only.name.clone(), nat.name.clone()]);
    for vm in &owned.vms {
        d.delete(vm, &ours).unwrap();
    }
    for net in &owned.networks {
        d.delete_network(net, &ours).unwrap();
    }
    assert_eq!(d.owned(&ours).unwrap(), Default::default());
    assert_eq!(d.state("t-own-m03").unwrap(), VmState::Stopped, "another home's VM stays");
    assert_eq!(d.owned(&other.owner).unwrap().vms, ["t-own2"]);
    d.delete("t-own-m03", &foreign.owner).unwrap();
    d.delete("t-own2", &other.owner).unwrap();
    d.delete_network(&other_profile.name, &other_profile.owner).unwrap();
}

#[test]
fn snapshots_pause_save_restore_list_delete_and_only_on_owned_domains() {
    let d = driver();
    let vm = vm_spec("t-snap", "t-snap");
    let host_only = net_spec("t-snap", NetworkKind::HostOnly, "192.168.218.0/24", &["t-snap"]);
    d.ensure_network(&host_only).unwrap();
    d.ensure_network(&net_spec("t-snap", NetworkKind::Nat, "192.168.219.0/24", &[])).unwrap();
    define(&vm);
    let o = &vm.owner;
    d.start("t-snap", o).unwrap();
    d.pause("t-snap", o).unwrap();
    d.pause("t-snap", o).unwrap(); // paused already: Ok
    assert_eq!(d.state("t-snap").unwrap(), VmState::Paused);
    d.snapshot_save("t-snap", o, "clean").unwrap();
    assert!(d.snapshot_save("t-snap", o, "clean").is_err(), "a second of the same name");
    d.resume("t-snap", o).unwrap();
    d.resume("t-snap", o).unwrap(); // runs already: Ok
    assert_eq!(d.state("t-snap").unwrap(), VmState::Running);
    // A snapshot a user took by hand is neither listed nor touched.
    let dom = raw().lookup_domain_by_name("t-snap").unwrap();
    dom.create_snapshot_xml("<domainsnapshot><name>mine</name></domainsnapshot>", 0).unwrap();
    assert_eq!(d.snapshots("t-snap", o).unwrap(), ["clean"]);

    // A snapshot with memory comes back paused, ready for resume.
    d.snapshot_restore("t-snap", o, "clean").unwrap();
    assert_eq!(d.state("t-snap").unwrap(), VmState::Paused);
    d.resume("t-snap", o).unwrap();
    let err = d.snapshot_restore("t-snap", o, "nope").unwrap_err();
    assert!(matches!(err, DriverError::NoSuchSnapshot { .. }), "{err:?}");
    assert_eq!(reason_id(err), "SNAP_INCOMPLETE");

    // A disk-only snapshot of the stopped domain does not boot it when restored.
    d.stop("t-snap", o, StopMode::Force).unwrap();
    d.snapshot_save("t-snap", o, "cold").unwrap();
    d.start("t-snap", o).unwrap();
    d.snapshot_restore("t-snap", o, "cold").unwrap();
    assert_eq!(d.state("t-snap").unwrap(), VmState::Stopped);

    // Another owner can do nothing with the domain's snapshots.
    let other = owner_in(OTHER_HOME, "t-snap");
    for result in [
        d.pause("t-snap", &other),
        d.snapshot_save("t-snap", &other, "x"),
        d.snapshot_restore("t-snap", &other, "clean"),
        d.snapshot_delete("t-snap", &other, "clean"),
    ] {
        assert!(matches!(result, Err(DriverError::ForeignVm { .. })), "{result:?}");
    }
    assert!(d.snapshots("t-snap", &other).is_err());

    d.snapshot_delete("t-snap", o, "cold").unwrap();
    d.snapshot_delete("t-snap", o, "cold").unwrap(); // gone already: Ok
    assert_eq!(d.snapshots("t-snap", o).unwrap(), ["clean"]);
    assert_eq!(d.snapshots("t-missing", o).unwrap(), Vec::<String>::new());
    // A domain with snapshots is still deleted in one call.
    d.delete("t-snap", o).unwrap();
    assert_eq!(d.state("t-snap").unwrap(), VmState::Missing);
    for name in [host_only.name, network_names("t-snap").1] {
        d.delete_network(&name, o).unwrap();
    }
}

/// `xml` (a domain's or network's, from the backend) with the marker an older kubelab
/// wrote instead: the profile alone, no home.
fn with_legacy_marker(xml: &str, profile: &str) -> String {
    let old = format!(
        "<kubelab:profile xmlns:kubelab=\"https://kubelab.dev/xmlns/1\">{profile}</kubelab:profile>"
    );
    let lines = xml.lines().map(|l| if l.contains("<kubelab:owner") { old.as_str() } else { l });
    lines.collect::<Vec<_>>().join("\n")
}

/// Issue "Never touch what is not yours", pre-marker profiles: a VM and a network an
/// older kubelab made for the profile are refused as such (the hint says how to remove
/// them) and left as they were; one made for another profile is
/// just foreign.
#[test]
fn objects_of_a_kubelab_from_before_markers_are_refused_as_legacy() {
    let d = driver();
    let vm = vm_spec("t-legacy", "t-legacy");
    raw()
        .define_domain_xml(&with_legacy_marker(&libvirt::domain_xml(&vm, POOL, None), "t-legacy"))
        .unwrap();
    let net = net_spec("t-legacy", NetworkKind::HostOnly, "192.168.212.0/24", &["t-legacy"]);
    let xml = with_legacy_marker(&libvirt::network_xml(&net), "t-legacy");
    raw().define_network_xml(&xml).unwrap();
    let o = &vm.owner;
    for err in [
        d.check_vm("t-legacy", o).unwrap_err(),
        d.start("t-legacy", o).unwrap_err(),
        d.delete("t-legacy", o).unwrap_err(),
        d.check_network(&net).unwrap_err(),
        d.ensure_network(&net).unwrap_err(),
        d.delete_network(&net.name, o).unwrap_err(),
    ] {
        let DriverError::Legacy { what, ref profile, .. } = err else { panic!("{err:?}") };
        assert_eq!(profile, "t-legacy");
        assert!(err.to_string().contains("from before owner markers"), "{err}");
        let expected = match what {
            Object::Vm => "DRV_VM_NOT_KUBELAB",
            Object::Network => "DRV_NET_NOT_KUBELAB",
        };
        assert_eq!(reason_id(err), expected);
    }
    let err = d.check_vm("t-legacy", &owner("t-legacy-x")).unwrap_err();
    assert!(matches!(err, DriverError::ForeignVm { owner: None, .. }), "{err:?}");
    let conn = raw();
    assert_eq!(d.state("t-legacy").unwrap(), VmState::Stopped, "left alone");
    conn.lookup_domain_by_name("t-legacy").unwrap().undefine().unwrap();
    conn.lookup_network_by_name(&net.name).unwrap().undefine().unwrap();
}

/// A remote hypervisor logs a node's console into kubelab's pool as `<node>.console.log`
/// (issue 15): the driver finds it there through libvirt, refuses it to another home,
/// and `delete` removes it with its domain, and no other volume. The test driver is
/// local (so the domains are defined from the remote XML here) and cannot download
/// (so reading stops at the stream, after the volume was found).
#[test]
fn a_console_log_in_the_pool_is_read_through_libvirt_and_deleted_with_its_domain() {
    let d = driver();
    let files = tempfile::tempdir().unwrap();
    let mut probe = vm_spec("t-con", "t-con-probe");
    probe.seed_iso = files.path().join("seed.iso");
    std::fs::write(&probe.seed_iso, [0u8; 512]).unwrap();
    // The test driver cannot upload: the failed upload still makes the pool.
    assert!(d.create(&probe).is_err());
    let pool = raw().lookup_storage_pool_by_name(POOL).unwrap();
    let log_volume = |name: &str| {
        let xml = format!(
            "<volume><name>{name}</name><capacity>4096</capacity>\
             <target><format type='raw'/></target></volume>"
        );
        StorageVol::create_xml(&pool, &xml, 0).unwrap();
    };
    let exists = |name: &str| pool.lookup_storage_vol_by_name(name).is_ok();

    let remote = vm_spec("t-con", "t-con");
    raw().define_domain_xml(&libvirt::domain_xml(&remote, POOL, Some("/kubelab-pool"))).unwrap();
    let local = vm_spec("t-con", "t-con-m03");
    define(&local);
    let tail = d.console_tail("t-con", &remote.owner, 1024).unwrap().unwrap();
    assert_eq!(tail.path, std::path::Path::new("/kubelab-pool/t-con.console.log"));
    assert_eq!(tail.text, "", "kept in the pool, nothing logged yet");
    assert_eq!(d.console_tail("t-con-m03", &local.owner, 1024).unwrap(), None, "the profile's");
    assert_eq!(d.console_tail("t-con-gone", &local.owner, 1024).unwrap(), None);

    // What QEMU leaves, and volumes that only look like a log of one of these domains.
    let others = ["t-con-m03.console.log", "t-con-m02.console.log", "t-con.console.log.1"];
    for name in std::iter::once("t-con.console.log").chain(others) {
        log_volume(name);
    }
    let err = d.console_tail("t-con", &remote.owner, 1024).unwrap_err();
    assert!(
        matches!(&err, DriverError::Backend { action: Action::ReadVolume, object, .. }
            if object == "t-con.console.log"),
        "{err:?}"
    );
    let stranger = owner_in(OTHER_HOME, "t-con");
    let err = d.console_tail("t-con", &stranger, 1024).unwrap_err();
    assert!(matches!(err, DriverError::ForeignVm { .. }), "{err:?}");
    let mut owned = d.owned(&remote.owner).unwrap().vms;
    owned.sort();
    assert_eq!(owned, ["t-con", "t-con-m03"], "a log volume is no node's leftover disk");

    d.delete("t-con", &stranger).unwrap_err();
    assert!(exists("t-con.console.log"), "another home's delete is refused first");
    d.delete("t-con", &remote.owner).unwrap();
    assert!(!exists("t-con.console.log"), "removed with its domain");
    d.delete("t-con-m03", &local.owner).unwrap();
    d.delete("t-con-m02", &remote.owner).unwrap();
    for name in others {
        assert!(exists(name), "{name} is no log of an owned domain in the pool");
        pool.lookup_storage_vol_by_name(name).unwrap().delete(0).unwrap();
    }
}
