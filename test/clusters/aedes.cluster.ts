// The cluster scenarios (scenarios.ts) on three Aedes nodes sharing their sessions and messages
// through Redis (aedes-persistence-redis, mqemitter-redis): a session lives in Redis, not in a node,
// so nothing acknowledged may be lost.
import { aedesClusterSkip, startAedesCluster } from '../helpers/aedesCluster';
import { clusterScenarios } from './scenarios';

clusterScenarios('MqttConnection and MqttMessageQueue on an Aedes + Redis cluster (3 nodes)', aedesClusterSkip(), () => startAedesCluster());
