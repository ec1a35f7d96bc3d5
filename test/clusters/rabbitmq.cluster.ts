// The cluster scenarios (scenarios.ts) on a three-node RabbitMQ cluster whose MQTT sessions live in
// quorum queues (replicated on every node), so nothing acknowledged may be lost.
import { rabbitmqClusterSkip, startRabbitMqCluster } from '../helpers/rabbitmqCluster';
import { clusterScenarios } from './scenarios';

clusterScenarios('MqttConnection and MqttMessageQueue on a RabbitMQ cluster (3 nodes, quorum queues)', rabbitmqClusterSkip(), () => startRabbitMqCluster());
