//! Every request the Firecracker and Cloud Hypervisor drivers send, checked against the
//! VMMs' own API specifications (`specs/`): the method and path must be an operation of the
//! API, and the body must match that operation's schema. Objects are checked closed (no
//! field the schema does not name), as both VMMs refuse unknown fields. Negative cases show
//! the check catches what the VMMs would refuse.

use std::path::Path;

use hearth_vmm::uds_api::ApiCall;
use hearth_vmm::{cloud_hypervisor as ch, firecracker as fc};
use hearth_vmm::{Accel, TapNet, VmConfig, VolumeDisk};
use serde_json::{json, Value};

/// An API specification: Swagger 2 (Firecracker) or OpenAPI 3 (Cloud Hypervisor).
struct Spec {
    doc: Value,
    /// Cloud Hypervisor's paths are under its server URL's path.
    base: &'static str,
}

impl Spec {
    fn load(file: &str, base: &'static str) -> Spec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("specs")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        Spec { doc, base }
    }

    fn swagger2(&self) -> bool {
        self.doc.get("swagger").is_some()
    }

    /// The path template of the API that `path` is an instance of.
    fn template(&self, path: &str) -> Option<String> {
        let path = path.strip_prefix(self.base)?;
        let want: Vec<&str> = path.split('/').collect();
        self.doc["paths"].as_object()?.keys().find_map(|t| {
            let have: Vec<&str> = t.split('/').collect();
            (have.len() == want.len()
                && have
                    .iter()
                    .zip(&want)
                    .all(|(h, w)| h == w || (h.starts_with('{') && !w.is_empty())))
            .then(|| t.clone())
        })
    }

    /// Checks one call; the error says what the VMM would refuse.
    fn check(&self, call: &ApiCall) -> Result<(), String> {
        let t = self
            .template(&call.path)
            .ok_or_else(|| format!("no such path: {}", call.path))?;
        let op = &self.doc["paths"][&t][call.method.to_ascii_lowercase()];
        if op.is_null() {
            return Err(format!("{} {t} is not an operation", call.method));
        }
        let (schema, required) = if self.swagger2() {
            match op["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["in"] == "body"))
            {
                Some(p) => (Some(p["schema"].clone()), p["required"] == true),
                None => (None, false),
            }
        } else {
            let rb = &op["requestBody"];
            match rb["content"]["application/json"]["schema"].clone() {
                Value::Null => (None, false),
                s => (Some(s), rb["required"] == true),
            }
        };
        match (schema, &call.body) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(format!("{} {t} takes no body", call.method)),
            (Some(_), None) if required => Err(format!("{} {t} needs a body", call.method)),
            (Some(_), None) => Ok(()),
            (Some(schema), Some(body)) => self.validate(&schema, body),
        }
    }

    fn validate(&self, schema: &Value, body: &Value) -> Result<(), String> {
        let mut root = schema.clone();
        let (key, defs) = if self.swagger2() {
            ("definitions", self.doc["definitions"].clone())
        } else {
            ("components", self.doc["components"].clone())
        };
        let mut defs = defs;
        close_objects(&mut defs);
        close_objects(&mut root);
        root[key] = defs;
        let v = jsonschema::validator_for(&root).map_err(|e| format!("the schema: {e}"))?;
        let errors: Vec<String> = v
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Marks every object schema that names its properties as closed, unless it says otherwise.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, x) in m.iter_mut() {
                close_objects(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn firecracker() -> Spec {
    Spec::load("firecracker.yaml", "")
}

fn cloud_hypervisor() -> Spec {
    Spec::load("cloud-hypervisor.yaml", "/api/v1")
}

fn config(tap: bool) -> VmConfig {
    VmConfig {
        kernel: "/k/bzImage".into(),
        initrd: "/k/initrd".into(),
        rootfs: Some("/img/rootfs.ext4".into()),
        disk: Some("/run/vm1/disk.ext4".into()),
        incoming: None,
        volumes: vec![VolumeDisk {
            name: "data".into(),
            path: "/vol/data.ext4".into(),
        }],
        user_net: None,
        tap: tap.then(|| TapNet {
            ifname: "htap1".into(),
            netns: None,
            mac: "02:00:00:00:00:01".into(),
            address: "10.88.0.2/16".into(),
            gateway: Some("10.88.0.1".into()),
            dns: vec!["10.88.0.1".into()],
        }),
        vcpus: 2,
        memory_mib: 512,
        accel: Accel::Kvm,
        hostname: "vm1".into(),
        run_dir: "/run/vm1".into(),
    }
}

fn all_ok(spec: &Spec, calls: &[ApiCall]) {
    for c in calls {
        if let Err(e) = spec.check(c) {
            panic!(
                "{} {} does not match the spec: {e}\n{:#?}",
                c.method, c.path, c.body
            );
        }
    }
}

#[test]
fn every_firecracker_request_matches_its_spec() {
    let spec = firecracker();
    for tap in [true, false] {
        let c = config(tap);
        all_ok(&spec, &fc::boot_calls(&c).unwrap());
        all_ok(&spec, &[fc::load_call(&c, None)]);
        // A clone on another TAP.
        all_ok(&spec, &[fc::load_call(&c, Some("htap-other"))]);
    }
    all_ok(
        &spec,
        &[
            fc::pause_call(),
            fc::resume_call(),
            fc::power_off_call(),
            fc::snapshot_call(),
        ],
    );
}

#[test]
fn every_cloud_hypervisor_request_matches_its_spec() {
    let spec = cloud_hypervisor();
    for tap in [true, false] {
        all_ok(&spec, &ch::boot_calls(&config(tap)).unwrap());
    }
    let dir = Path::new("/snap/dir");
    all_ok(
        &spec,
        &[
            ch::pause_call(),
            ch::resume_call(),
            ch::power_off_call(),
            ch::snapshot_call(dir),
            ch::restore_call(dir),
            ch::shutdown_vmm_call(),
        ],
    );
}

/// The check is not a rubber stamp: what each VMM refuses, it refuses.
#[test]
fn the_spec_check_catches_bad_requests() {
    let spec = firecracker();
    let refused = |c: ApiCall| {
        let r = spec.check(&c);
        assert!(r.is_err(), "{} {} passed: {:?}", c.method, c.path, c.body);
        r.unwrap_err()
    };
    // A required field missing, a number out of range, a value not in the enum, a field
    // the schema does not name, a wrong type.
    refused(ApiCall::put(
        "/machine-config",
        json!({"mem_size_mib": 128}),
    ));
    let e = refused(ApiCall::put(
        "/machine-config",
        json!({"vcpu_count": 64, "mem_size_mib": 128}),
    ));
    assert!(e.contains("64"), "{e}");
    refused(ApiCall::put("/actions", json!({"action_type": "Reboot"})));
    let e = refused(ApiCall::put(
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "is_root_device": false, "readonly": true}),
    ));
    assert!(e.contains("readonly"), "{e}");
    refused(ApiCall::put(
        "/vsock",
        json!({"guest_cid": "3", "uds_path": "/v"}),
    ));
    refused(ApiCall::put(
        "/vsock",
        json!({"guest_cid": 2, "uds_path": "/v"}),
    ));
    // Not an operation, or the wrong method.
    refused(ApiCall::put("/drive/rootfs", json!({})));
    refused(ApiCall::get("/boot-source"));
    refused(ApiCall::put_empty("/actions"));

    let spec = cloud_hypervisor();
    let refused = |c: ApiCall| {
        assert!(
            spec.check(&c).is_err(),
            "{} {} passed: {:?}",
            c.method,
            c.path,
            c.body
        );
    };
    let good = ch::vm_config(&config(true)).unwrap();
    let mut no_payload = good.clone();
    no_payload.as_object_mut().unwrap().remove("payload");
    refused(ApiCall::put("/api/v1/vm.create", no_payload));
    let mut zero_cpus = good.clone();
    zero_cpus["cpus"]["boot_vcpus"] = json!(0);
    refused(ApiCall::put("/api/v1/vm.create", zero_cpus));
    let mut bad_serial = good.clone();
    bad_serial["serial"]["mode"] = json!("Disk");
    refused(ApiCall::put("/api/v1/vm.create", bad_serial));
    let mut extra = good;
    extra["disks"][0]["read_only"] = json!(true);
    refused(ApiCall::put("/api/v1/vm.create", extra));
    refused(ApiCall::put("/api/v1/vm.restore", json!({"resume": true})));
    refused(ApiCall::put_empty("/api/v1/vm.teleport"));
    refused(ApiCall::put_empty("/vm.boot"));
}

/// What the drivers refuse, they refuse before sending anything.
#[test]
fn user_mode_networking_is_refused_by_both() {
    let mut c = config(false);
    c.user_net = Some(hearth_vmm::UserNet {
        mac: "02:00:00:00:00:03".into(),
        forwards: vec![],
    });
    assert!(fc::boot_calls(&c).is_err());
    assert!(ch::boot_calls(&c).is_err());
}
