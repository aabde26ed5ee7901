// Validate rendered manifests offline against the Kubernetes, Argo Rollouts and Istio schemas.
// Usage: node validate.mjs FILE...   One line per problem on stderr; exit 1 if any.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1/VirtualService";

const MODELS = {
  "v1/Service": Service,
  "v1/ServiceAccount": ServiceAccount,
  "argoproj.io/v1alpha1/Rollout": Rollout,
  "argoproj.io/v1alpha1/AnalysisTemplate": AnalysisTemplate,
  "networking.istio.io/v1/VirtualService": VirtualService,
};

let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const obj = doc.toJS();
    if (obj === null) continue;
    const key = `${obj.apiVersion}/${obj.kind}`;
    const where = `${file}: ${obj.kind}/${obj.metadata?.name ?? "?"}`;
    const Model = MODELS[key];
    if (!Model) {
      console.error(`${where}: no schema for ${key}`);
      problems += 1;
      continue;
    }
    try {
      new Model(obj).validate();
    } catch (err) {
      console.error(`${where}: ${err.message}`);
      problems += 1;
    }
  }
}
process.exit(problems ? 1 : 0);
