//! [`EndpointBuilder`]: an endpoint serving a model file with the built-in
//! model server.

use gpuctl_common::api::{ObjectMeta, API_VERSION};
use gpuctl_common::endpoint::{Endpoint, EndpointSpec, ModelSpec};

/// An endpoint named `name` serving the ONNX model at `/m/{name}.onnx`,
/// with the default resources, autoscaling and batching.
pub fn endpoint(name: &str) -> EndpointBuilder {
    EndpointBuilder {
        ep: Endpoint {
            api_version: API_VERSION.into(),
            kind: "Endpoint".into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            spec: EndpointSpec {
                model: Some(ModelSpec {
                    name: None,
                    path: format!("/m/{name}.onnx"),
                    format: "onnx".into(),
                }),
                ..Default::default()
            },
            status: Default::default(),
        },
    }
}

/// Sets one field at a time of the endpoint [`endpoint`] starts.
#[derive(Debug, Clone)]
pub struct EndpointBuilder {
    ep: Endpoint,
}

impl EndpointBuilder {
    /// The model file the replicas serve.
    pub fn model(mut self, path: &str) -> Self {
        if let Some(m) = &mut self.ep.spec.model {
            m.path = path.into();
        }
        self
    }

    /// GPUs per replica.
    pub fn gpus(mut self, gpus: f64) -> Self {
        self.ep.spec.resources.gpus = gpus;
        self
    }

    /// `minReplicas` and `maxReplicas`.
    pub fn replicas(mut self, min: u32, max: u32) -> Self {
        self.ep.spec.autoscaling.min_replicas = min;
        self.ep.spec.autoscaling.max_replicas = max;
        self
    }

    pub fn target_concurrency(mut self, c: f64) -> Self {
        self.ep.spec.autoscaling.target_concurrency = c;
        self
    }

    pub fn scale_to_zero_after_seconds(mut self, s: u64) -> Self {
        self.ep.spec.autoscaling.scale_to_zero_after_seconds = s;
        self
    }

    pub fn stable_window_seconds(mut self, s: u64) -> Self {
        self.ep.spec.autoscaling.stable_window_seconds = s;
        self
    }

    pub fn build(self) -> Endpoint {
        self.ep
    }
}

#[cfg(test)]
mod tests {
    use gpuctl_common::api::{parse_manifests, Manifest};

    use super::*;

    fn parse(text: &str) -> Endpoint {
        match parse_manifests("ep.yaml", text).unwrap().remove(0) {
            Manifest::Endpoint(e) => e,
            other => panic!("not an endpoint: {other:?}"),
        }
    }

    #[test]
    fn builds_what_the_parser_makes() {
        let yaml = "apiVersion: gpuctl.io/v1\nkind: Endpoint\nmetadata: {name: lin}\nspec:\n  model: {path: /m/linear.onnx}\n  resources: {gpus: 1}\n";
        let ep = endpoint("lin").model("/m/linear.onnx").gpus(1.0).build();
        ep.validate().unwrap();
        assert_eq!(ep, parse(yaml));
        let yaml = "apiVersion: gpuctl.io/v1\nkind: Endpoint\nmetadata: {name: lin}\nspec:\n  model: {path: /m/lin.onnx}\n  autoscaling: {minReplicas: 1, maxReplicas: 3, targetConcurrency: 2, scaleToZeroAfterSeconds: 5, stableWindowSeconds: 10}\n";
        let ep = endpoint("lin")
            .replicas(1, 3)
            .target_concurrency(2.0)
            .scale_to_zero_after_seconds(5)
            .stable_window_seconds(10)
            .build();
        assert_eq!(ep, parse(yaml));
    }
}
