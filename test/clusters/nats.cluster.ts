// The cluster scenarios (scenarios.ts) on a three-node NATS cluster: JetStream keeps the MQTT
// sessions on every node (replicas 3), so nothing acknowledged may be lost.
import { natsClusterSkip, startNatsCluster } from '../helpers/natsCluster';
import { clusterScenarios } from './scenarios';

clusterScenarios('MqttConnection and MqttMessageQueue on a NATS cluster (3 nodes, JetStream replicas 3)', natsClusterSkip(), () => startNatsCluster());
