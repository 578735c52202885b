//! The renderers' output, pinned exactly from fixture objects.

use super::*;
use gpuctl_common::api::{Event, GpuShare, JobPhase, TaskStatus};

const NOW: u64 = 1_700_000_000_000;

fn job(name: &str, replicas: u32, gpus: f64) -> Job {
    gpuctl_testkit::job(name)
        .replicas(replicas)
        .gpus(gpus)
        .command(&["sh", "-c", "echo $RANK"])
        .created_ms(NOW - 90_000)
        .build()
}

fn task(index: u32, phase: TaskPhase, node: &str, gpus: &[(u32, u32)]) -> TaskStatus {
    TaskStatus {
        index,
        group: "main".into(),
        phase,
        node: Some(node.into()),
        gpus: gpus
            .iter()
            .map(|&(index, milli)| GpuShare {
                index,
                uuid: format!("GPU-{index}"),
                milli,
            })
            .collect(),
        ..Default::default()
    }
}

fn node(name: &str, gpus: u32) -> Node {
    gpuctl_testkit::node(name)
        .gpus(gpus, gpuctl_testkit::A100)
        .unhealthy(3)
        .cpu_milli(16_000)
        .memory_bytes(64 << 30)
        .agent_endpoint("http://127.0.0.1:9001")
        .registered_ms(NOW - 3_600_000)
        .build()
}

/// Two jobs on two nodes: `train` holds 2 whole GPUs on n1 and one
/// finished task; `frac` holds two half shares of GPU 5 on n1 and one on n2.
fn fixture() -> (Vec<Job>, Vec<Node>) {
    let mut train = job("train", 3, 1.0);
    train.metadata.queue = Some("research".into());
    train.status.phase = JobPhase::Running;
    train.status.attempt = 1;
    train.status.tasks = vec![
        task(0, TaskPhase::Running, "n1", &[(0, 1000)]),
        task(1, TaskPhase::Bound, "n1", &[(1, 1000)]),
        task(2, TaskPhase::Succeeded, "n1", &[(2, 1000)]),
    ];
    let mut frac = job("frac", 3, 0.5);
    frac.status.phase = JobPhase::Running;
    frac.status.attempt = 2;
    frac.status.tasks = vec![
        task(0, TaskPhase::Running, "n1", &[(5, 500)]),
        task(1, TaskPhase::Running, "n1", &[(5, 500)]),
        task(2, TaskPhase::Running, "n2", &[(0, 500)]),
    ];
    let mut n2 = node("n2", 4);
    n2.spec.unschedulable = true;
    let mut n3 = node("n3", 2);
    n3.status.phase = NodePhase::Lost;
    (vec![train, frac], vec![node("n1", 8), n2, n3])
}

#[test]
fn jobs_table_renders() {
    let (jobs, _) = fixture();
    let got = jobs_table(&jobs, NOW);
    let want = "\
NAME    QUEUE      PHASE     TASKS   GPUS   ATTEMPT   AGE
train   research   Running   1/3     3      1         90s
frac    default    Running   3/3     1.5    2         90s
";
    assert_eq!(got, want, "\n{got}");
}

#[test]
fn a_step_job_s_image_is_shown_by_get_and_describe() {
    let (mut jobs, _) = fixture();
    jobs[1].spec.tasks[0].image = Some("busybox:1.36".into());
    let got = jobs_table(&jobs, NOW);
    let want = "\
NAME    QUEUE      PHASE     TASKS   GPUS   ATTEMPT   IMAGE          AGE
train   research   Running   1/3     3      1         -              90s
frac    default    Running   3/3     1.5    2         busybox:1.36   90s
";
    assert_eq!(got, want, "\n{got}");
    let d = describe_job(&jobs[1], NOW);
    assert!(d.contains("    Image:      busybox:1.36\n"), "{d}");
    assert!(!describe_job(&jobs[0], NOW).contains("Image:"));
}

#[test]
fn nodes_table_sums_allocation_and_shows_cordon() {
    let (jobs, nodes) = fixture();
    let got = nodes_table(&nodes, &jobs, NOW);
    let want = "\
NAME   STATUS                     GPUS    MODELS        INVENTORY   AGE
n1     Ready                      3/8     8xA100-80GB   simulated   60m
n2     Ready,SchedulingDisabled   0.5/4   4xA100-80GB   simulated   60m
n3     Lost                       0/2     2xA100-80GB   simulated   60m
";
    assert_eq!(got, want, "\n{got}");
    assert_eq!(allocated_milli("n1", &jobs), 3000);
}

#[test]
fn cordon_reasons_and_gpu_faults_are_shown() {
    let (jobs, mut nodes) = fixture();
    nodes[1].spec.cordon_reason = Some("GPU 0 (GPU-x) reported XID 79".into());
    nodes[1].status.gpus[0].healthy = false;
    nodes[1].status.gpus[0].xid = 79;
    nodes[1].status.events.push(Event {
        time_ms: NOW - 5_000,
        reason: "Cordoned".into(),
        message: "GPU 0 (GPU-x) reported XID 79".into(),
    });
    let got = nodes_table(&nodes, &jobs, NOW);
    let header = got.lines().next().unwrap();
    assert!(header.ends_with("AGE   REASON"), "{got}");
    assert!(got.contains("   GPU 0 (GPU-x) reported XID 79\n"), "{got}");
    assert!(got.lines().nth(1).unwrap().ends_with("   -"), "{got}");
    let d = describe_node(&nodes[1], &jobs, NOW);
    assert!(
        d.contains("Cordoned:     GPU 0 (GPU-x) reported XID 79\n"),
        "{d}"
    );
    assert!(
        d.contains("no (XID 79 (GPU has fallen off the bus))"),
        "{d}"
    );
    assert!(d.contains("Cordoned") && d.contains("Events"), "{d}");
}

#[test]
fn describe_job_shows_specs_tasks_and_events() {
    let (mut jobs, _) = fixture();
    let j = &mut jobs[1];
    j.status.events.push(Event {
        time_ms: NOW - 5_000,
        reason: "Scheduled".into(),
        message: "3 tasks bound".into(),
    });
    j.status.tasks[2].exit_code = Some(0);
    let d = describe_job(j, NOW);
    assert!(d.contains("Name:         frac\n"), "{d}");
    assert!(d.contains("Attempt:      2 (maxRetries 0)\n"), "{d}");
    assert!(d.contains("Command:    sh -c 'echo $RANK'\n"), "{d}");
    assert!(d.contains("Resources:  gpus=0.5\n"), "{d}");
    assert!(
        d.contains("INDEX   GROUP   PHASE     NODE   GPUS     EXIT   MESSAGE"),
        "{d}"
    );
    assert!(
        d.contains("2       main    Running   n2     0(0.5)   0      -"),
        "{d}"
    );
    assert!(d.contains("5s ago   Scheduled   3 tasks bound"), "{d}");
    assert!(
        d.contains("Created:      2023-11-14T22:11:50Z (90s ago)"),
        "{d}"
    );
    assert!(!d.contains("MEM PEAK"), "no usage, no columns: {d}");
}

#[test]
fn describe_job_shows_what_ended_tasks_used() {
    let (mut jobs, _) = fixture();
    let j = &mut jobs[1];
    j.status.tasks[2].phase = TaskPhase::Failed;
    j.status.tasks[2].exit_code = Some(137);
    j.status.tasks[2].message =
        Some("OOMKilled: the task used more than its memory limit of 64Mi".into());
    j.status.tasks[2].usage = Some(gpuctl_common::api::TaskUsage {
        cpu_ms: 1250,
        memory_peak_bytes: 64 << 20,
    });
    let d = describe_job(j, NOW);
    assert!(
        d.contains("INDEX   GROUP   PHASE     NODE   GPUS     EXIT   CPU    MEM PEAK   MESSAGE"),
        "{d}"
    );
    assert!(
        d.contains(
            "2       main    Failed    n2     0(0.5)   137    1.2s   64Mi       OOMKilled: the \
             task used more than its memory limit of 64Mi"
        ),
        "{d}"
    );
}

#[test]
fn describe_node_shows_gpus_and_tasks() {
    let (jobs, nodes) = fixture();
    let d = describe_node(&nodes[0], &jobs, NOW);
    assert!(d.contains("Status:       Ready\n"), "{d}");
    assert!(d.contains("gpus:    8 (3 allocated)"), "{d}");
    assert!(d.contains("frac/0(0.5),frac/1(0.5)"), "{d}");
    assert!(d.contains("GPU-n1-0   yes       train/0"), "{d}");
    assert!(d.contains("GPU-n1-3   no        -"), "{d}");
    // The finished task holds nothing.
    assert!(!d.contains("train/2"), "{d}");
    assert!(d.contains("train   1      Bound"), "{d}");
}

#[test]
fn formats() {
    assert_eq!(format_gpus(2.0), "2");
    assert_eq!(human_bytes(24_684_092 << 10), "23.5Gi");
    assert_eq!(human_bytes(80 << 30), "80Gi");
    assert_eq!(human_bytes(512), "512");
    assert_eq!(format_gpus(0.25), "0.25");
    assert_eq!(format_gpus(1.5), "1.5");
    assert_eq!(format_age(Some(NOW - 5_000), NOW), "5s");
    assert_eq!(format_age(Some(NOW - 200_000), NOW), "3m20s");
    assert_eq!(format_age(Some(NOW - 3_600_000 * 5 - 60_000), NOW), "5h1m");
    assert_eq!(format_age(Some(NOW - 86_400_000 * 3), NOW), "3d0h");
    assert_eq!(format_age(None, NOW), "<unknown>");
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00Z");
    assert_eq!(
        shell_join(&["sh".into(), "-c".into(), "it's".into()]),
        r"sh -c 'it'\''s'"
    );
}

#[test]
fn describe_shows_the_owner_and_who_a_queue_is_open_to() {
    let mut j = job("train", 1, 1.0);
    assert!(!describe_job(&j, NOW).contains("Owner:"));
    j.metadata.owner = Some("alice".into());
    assert!(describe_job(&j, NOW).contains("\nOwner:        alice\n"));
    let mut q = gpuctl_testkit::queue("nlp").build();
    assert!(describe_queue(&q, &[], NOW).contains("Open to:          every user\n"));
    q.spec.teams = vec!["nlp".into()];
    q.spec.users = vec!["carol".into()];
    assert!(describe_queue(&q, &[], NOW).contains("Open to:          teams nlp; users carol\n"));
}
