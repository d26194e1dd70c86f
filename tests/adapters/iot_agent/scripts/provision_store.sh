#!/bin/sh
# A provisioning script written for a FIWARE IoT Agent for UltraLight (north port 4041, south
# port 7896), in the style of the FIWARE step-by-step tutorials. The test replays it unchanged
# against jonction, only mapping the two ports to the test's.

# 1. Health check of the IoT Agent
curl -X GET \
  'http://localhost:4041/iot/about'

# 2. A service group: every device of this apikey is a "Thing" unless provisioned otherwise
curl -iX POST \
  'http://localhost:4041/iot/services' \
  -H 'Content-Type: application/json' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /' \
  -d '{
 "services": [
   {
     "apikey":      "4jggokgpepnvsb2uv4s40d59ov",
     "cbroker":     "http://orion:1026",
     "entity_type": "Thing",
     "resource":    "/iot/d"
   }
 ]
}'

# 3. Provision sensors and actuators
curl -iX POST \
  'http://localhost:4041/iot/devices' \
  -H 'Content-Type: application/json' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /' \
  -d '{
 "devices": [
   {
     "device_id":   "temperature001",
     "entity_name": "urn:ngsi-ld:Temperature:001",
     "entity_type": "Temperature",
     "timezone":    "Europe/Paris",
     "attributes": [
       { "object_id": "t", "name": "temperature", "type": "Number",
         "metadata": { "unitCode": { "type": "Text", "value": "CEL" } } }
     ],
     "static_attributes": [
       { "name": "refStore", "type": "Relationship", "value": "urn:ngsi-ld:Store:001" }
     ]
   },
   {
     "device_id":   "motion001",
     "entity_name": "urn:ngsi-ld:Motion:001",
     "entity_type": "Motion",
     "protocol":    "PDI-IoTA-UltraLight",
     "transport":   "HTTP",
     "timezone":    "Europe/Paris",
     "attributes": [
       { "object_id": "c", "name": "count", "type": "Integer" }
     ],
     "static_attributes": [
       { "name": "refStore", "type": "Relationship", "value": "urn:ngsi-ld:Store:001" }
     ]
   }
 ]
}'

curl -iX POST \
  'http://localhost:4041/iot/devices' \
  -H 'Content-Type: application/json' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /' \
  -d '{
  "devices": [
    {
      "device_id": "bell001",
      "entity_name": "urn:ngsi-ld:Bell:001",
      "entity_type": "Bell",
      "protocol": "PDI-IoTA-UltraLight",
      "transport": "HTTP",
      "commands": [
        { "name": "ring", "type": "command" }
      ],
      "static_attributes": [
        { "name": "refStore", "type": "Relationship", "value": "urn:ngsi-ld:Store:001" }
      ]
    }
  ]
}'

# 4. The devices send measures
curl -iX POST \
  'http://localhost:7896/iot/d?k=4jggokgpepnvsb2uv4s40d59ov&i=motion001' \
  -H 'Content-Type: text/plain' \
  -d 'c|1'

curl -iX POST \
  'http://localhost:7896/iot/d?k=4jggokgpepnvsb2uv4s40d59ov&i=temperature001' \
  -H 'Content-Type: text/plain' \
  -d 't|18.5'

# 5. A device nobody provisioned: autoprovisioned as a Thing of the group
curl -iX POST \
  'http://localhost:7896/iot/d?k=4jggokgpepnvsb2uv4s40d59ov&i=door001' \
  -H 'Content-Type: text/plain' \
  -d 's|OPEN'

# 6. Ring the bell: what the context broker forwards to the IoT Agent
curl -iX POST \
  'http://localhost:4041/v2/op/update' \
  -H 'Content-Type: application/json' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /' \
  -d '{
  "actionType": "update",
  "entities": [
    {
      "type": "Bell",
      "id": "urn:ngsi-ld:Bell:001",
      "ring" : {
        "type": "command",
        "value": ""
      }
    }
  ]
}'

# 7. Read the provisioning back, change and remove a device
curl -X GET \
  'http://localhost:4041/iot/devices' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /'

curl -iX PUT \
  'http://localhost:4041/iot/devices/motion001' \
  -H 'Content-Type: application/json' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /' \
  -d '{
  "static_attributes": [
    { "name": "refStore", "type": "Relationship", "value": "urn:ngsi-ld:Store:002" }
  ]
}'

curl -iX POST \
  'http://localhost:7896/iot/d?k=4jggokgpepnvsb2uv4s40d59ov&i=motion001' \
  -H 'Content-Type: text/plain' \
  -d 'c|2'

curl -iX DELETE \
  'http://localhost:4041/iot/devices/door001' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /'

curl -X GET \
  'http://localhost:4041/iot/services' \
  -H 'fiware-service: openiot' \
  -H 'fiware-servicepath: /'
