// The cluster scenarios (scenarios.ts) on a three-node ejabberd cluster (mod_mqtt): ejabberd keeps an
// MQTT session only on the node it lives on, so where a node dies the subscriber must find the
// session gone, say so, resubscribe, and lose nothing published outside the outage.
import { ejabberdClusterSkip, startEjabberdCluster } from '../helpers/ejabberdCluster';
import { clusterScenarios } from './scenarios';

clusterScenarios('MqttConnection and MqttMessageQueue on an ejabberd cluster (3 nodes, mod_mqtt, sessions not replicated)', ejabberdClusterSkip(),
    () => startEjabberdCluster());
