# The project on the official Airflow image: DAGs, plugins and include/ under /opt/airflow/project.
# Not built on the development machines (no Docker engine there); see the README.
FROM apache/airflow:3.3.2-python3.11

ENV PROJECT=/opt/airflow/project \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/project/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/project/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    PYTHONPATH=/opt/airflow/project

COPY --chown=airflow:root requirements.txt constraints.txt ${PROJECT}/
RUN pip install --no-cache-dir -r ${PROJECT}/requirements.txt

COPY --chown=airflow:root dags ${PROJECT}/dags
COPY --chown=airflow:root plugins ${PROJECT}/plugins
COPY --chown=airflow:root include ${PROJECT}/include
COPY --chown=airflow:root scripts ${PROJECT}/scripts
WORKDIR ${PROJECT}
